"""nanoGPT's shakespeare_char data, reproduced from ../shared/data when it is there."""

import pytest

from configs import common
from input_pipeline import tokenizer
from input_pipeline.corpora import local_text, sources
from tests.helpers import SHARED_DATA

INPUT = SHARED_DATA / "tinyshakespeare" / "input.txt"
pytestmark = pytest.mark.skipif(not INPUT.exists(), reason="../shared/data/tinyshakespeare absent")


def test_tail_split_and_char_vocabulary_match_nanogpt(tmp_path):
  text = INPUT.read_text(encoding="utf-8")
  assert len(text) == 1_115_394
  builder = local_text.LocalText(
    config=local_text.make_config(str(INPUT), "file", 0.1, "tail"), data_dir=str(tmp_path)
  )
  sources.prepare(builder)
  n = len(text)
  assert list(sources.texts(builder, "train", "text")) == [text[: int(n * 0.9)]]
  assert list(sources.texts(builder, "validation", "text")) == [text[int(n * 0.9) :]]
  cfg = common.data_config().tokenizer
  cfg.kind = "char"
  tok = tokenizer.get_tokenizer(cfg, str(tmp_path), lambda: sources.texts(builder, "train", "text"))
  chars = sorted(set(text))
  assert len(chars) == 65
  assert [tok.token_to_id(c) for c in chars] == list(range(65))  # nanoGPT's stoi
  assert tok.decode(tok.encode(text[:1000]).ids) == text[:1000]
