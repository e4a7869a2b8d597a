"""Imported tokenizers encode as `transformers`' own (pure Python) tokenizers do, on mixed
text: GPT-2's vocab.json + merges.txt, and BERT's vocab.txt, cased and uncased."""

import pytest

transformers = pytest.importorskip("transformers")

from input_pipeline import tokenizer
from pretrain.state import hf_conversion

CORPUS = [
  "The quick brown fox jumps over the lazy dog. Ünïcödé, café, naïve, Ærøskøbing.\n" * 20,
  "def f(x):\n    return {'a': x ** 2, \"b\": [1, 2, 3]}  # code, tabs\tand  spaces\n" * 20,
  "日本語のテキスト, Ελληνικά, русский текст, emoji 😀🎉 and numbers 3.14159 2,718\n" * 20,
]
MIXED = [
  "Hello, World! It's 2026 — “quotes” and ‘apostrophes’…",
  "Ünïcödé accents: Crème Brûlée, São Paulo, Zürich, ÅNGSTRÖM",
  "def g(y):\n\treturn y // 2  # comment with    runs of spaces\r\n",
  "中文字符 mixed with English and 日本語, русский, Ελληνικά",
  "emoji 😀🎉🚀 and symbols ∑∫√ ≠ ≤ ≥ ©®™ and zero\u200bwidth",
  "  leading and trailing spaces  ",
]


def test_gpt2_vocab_and_merges_encode_like_transformers(tmp_path):
  trained = tokenizer._train_bpe(CORPUS, 400, "<|endoftext|>")
  trained.model.save(str(tmp_path))  # vocab.json + merges.txt, as GPT-2 ships them
  ours = hf_conversion.read_tokenizer(str(tmp_path), "gpt2")
  theirs = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
  for text in MIXED:
    ids = ours.encode(text).ids
    assert ids == theirs.encode(text), text
    assert ours.decode(ids) == text


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_bert_vocab_txt_encodes_like_transformers(tmp_path, lowercase):
  trained = tokenizer._train_wordpiece(CORPUS, 600, lowercase)
  vocab = sorted(trained.get_vocab().items(), key=lambda kv: kv[1])
  path = tmp_path / "vocab.txt"
  path.write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
  ours = tokenizer._load_vocab_txt(str(path), lowercase)
  theirs = transformers.BertTokenizer(str(path), do_lower_case=lowercase)
  for text in MIXED:
    assert ours.encode(text, add_special_tokens=False).ids == theirs.encode(
      text, add_special_tokens=False
    ), text
