"""Unusable data is refused with one clear line before anything compiles, never half-trained
on: a corpus of only invalid UTF-8, and a prepared dataset whose token file was truncated.
(Binary files and an empty corpus: tests/pretrain/test_errors.py.)"""

import glob
import os

import pytest

from pretrain.ground import errors
from pretrain.training import trainer
from tests.helpers import COMPILES


def _refused(config, workdir, *words):
  COMPILES.clear()
  with pytest.raises(errors.UserError) as info:
    trainer.train_and_evaluate(config, str(workdir))
  message = str(info.value)
  assert "\n" not in message and all(w in message for w in words), message
  assert not COMPILES
  assert not (workdir / "checkpoints").exists()


def test_a_corpus_of_only_invalid_utf8(tiny_config, tmp_path):
  latin1 = tmp_path / "latin1.txt"
  latin1.write_bytes(
    "\n\n".join(f"caf\xe9 num\xe9ro {i} \xe0 la cr\xe8me" for i in range(200)).encode("latin-1")
  )
  config = tiny_config(
    **{
      "data.files": str(latin1),
      "data.data_dir": str(tmp_path / "data"),
      "data.doc_split": "blank_line",
    }
  )
  _refused(config, tmp_path / "run", "config.data.files", "latin1.txt")


def test_a_truncated_token_file(tiny_config, tmp_path, data_dir):
  config = tiny_config(
    **{"data.tokenized_dir": str(tmp_path / "tokenized"), "train.total_steps": 1}
  )
  trainer.train_and_evaluate(config, str(tmp_path / "first"))
  [tokens] = glob.glob(str(tmp_path / "tokenized" / "train.documents" / "*.tokens.bin"))
  os.truncate(tokens, os.path.getsize(tokens) // 2)
  _refused(config, tmp_path / "second", "config.data", "tokens.bin has", "prepare it again")
