"""Tokenizers (input_pipeline/tokenizer.py): trained BPE cached by content, char-level, files."""

import os

import numpy as np
import pytest
import tokenizers as hf_tokenizers

from configs import common
from input_pipeline import tokenizer
from input_pipeline.finetuning import glue
from pretrain.state import hf_conversion

TokenizerError = tokenizer.TokenizerError
EOS = "<|endoftext|>"

CORPUS = [
  "the quick brown fox jumps over the lazy dog.\n" * 30,
  "Pack my box with five dozen liquor jugs!  Sphinx of black quartz, judge my vow.\n\n",
  "ünïcödé, 日本語のテキスト, emoji 😀🎉 and\ttabs\r\nand CRLF lines\n",
  "def f(x):\n    return x ** 2  # indented code\n",
]

ROUND_TRIP = [
  "hello world\n",
  "  two leading spaces, three trailing   ",
  "\n\n\nonly newlines before\n\n",
  "tabs\tand\r\ncarriage returns",
  "ünïcödé 日本語 😀🎉 Ωμέγα — “quotes” ‘single’ …",
  "never seen in training: ĳ ŋ ʃ ∑∫ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b zero-width",
  "",
]


def _cfg(kind="bpe", **overrides):
  cfg = common.data_config().tokenizer
  cfg.kind = kind
  cfg.vocab_size = 320
  for key, value in overrides.items():
    cfg[key] = value
  return cfg


class Corpus:
  """A train_texts callable that counts its calls."""

  def __init__(self, texts):
    self.texts, self.calls = list(texts), 0

  def __call__(self):
    self.calls += 1
    return iter(self.texts)


def _never():
  raise AssertionError("train_texts must not be called for kind='file'")


def _cache_files(data_dir):
  d = os.path.join(data_dir, "tokenizers")
  return sorted(os.listdir(d)) if os.path.isdir(d) else []


# ----------------------------------------------------------------------------- bpe


def test_bpe_is_trained_once_and_cached(tmp_path, monkeypatch):
  data_dir = str(tmp_path)
  tok = tokenizer.get_tokenizer(_cfg(), data_dir, Corpus(CORPUS))
  files = _cache_files(data_dir)
  assert len(files) == 1 and files[0].startswith("bpe_") and files[0].endswith(".json")
  path = os.path.join(data_dir, "tokenizers", files[0])
  mtime = os.stat(path).st_mtime_ns
  assert hf_tokenizers.Tokenizer.from_file(path).to_str() == tok.to_str()
  assert tok.get_vocab_size() == 320
  assert tok.token_to_id(EOS) is not None

  def no_training(*args, **kwargs):
    raise AssertionError("retrained although the cache file exists")

  monkeypatch.setattr(tokenizer, "_train_bpe", no_training)
  again = tokenizer.get_tokenizer(_cfg(), data_dir, Corpus(CORPUS))
  assert again.to_str() == tok.to_str()
  assert tokenizer.identity(again) == tokenizer.identity(tok)
  assert _cache_files(data_dir) == files  # no new file, no temp file left behind
  assert os.stat(path).st_mtime_ns == mtime


def test_bpe_cache_key_covers_corpus_and_options(tmp_path):
  data_dir = str(tmp_path)
  base = tokenizer.get_tokenizer(_cfg(), data_dir, Corpus(CORPUS))
  changed = tokenizer.get_tokenizer(_cfg(), data_dir, Corpus(CORPUS[:-1] + [CORPUS[-1] + "x"]))
  assert len(_cache_files(data_dir)) == 2
  bigger = tokenizer.get_tokenizer(_cfg(vocab_size=340), data_dir, Corpus(CORPUS))
  assert bigger.get_vocab_size() == 340
  other_eos = tokenizer.get_tokenizer(_cfg(eos_token="</s>"), data_dir, Corpus(CORPUS))
  assert other_eos.token_to_id("</s>") is not None and other_eos.token_to_id(EOS) is None
  assert len(_cache_files(data_dir)) == 4
  del changed  # a slightly different corpus may train the same merges; its cache file differs
  ids = {tokenizer.identity(t) for t in (base, bigger, other_eos)}
  assert len(ids) == 3
  # document boundaries are part of the key: the same characters split differently differ
  tokenizer.get_tokenizer(_cfg(), data_dir, Corpus(["".join(CORPUS)]))
  assert len(_cache_files(data_dir)) == 5


def test_max_train_chars_limits_the_training_text(tmp_path):
  data_dir = str(tmp_path)
  corpus = Corpus(CORPUS)
  limit = len(CORPUS[0]) + 10
  a = tokenizer.get_tokenizer(_cfg(max_train_chars=limit), data_dir, corpus)
  # text past the limit neither changes the tokenizer nor the cache file
  b = tokenizer.get_tokenizer(
    _cfg(max_train_chars=limit),
    data_dir,
    Corpus(CORPUS[:1] + [CORPUS[1][:10] + "anything else entirely"]),
  )
  assert a.to_str() == b.to_str()
  assert len(_cache_files(data_dir)) == 1


class Part:
  """An iterable of texts that counts how many were read."""

  def __init__(self, texts):
    self.texts, self.read = list(texts), 0

  def __iter__(self):
    for text in self.texts:
      self.read += 1
      yield text


def test_spread_sample_takes_everything_that_fits_in_order():
  parts = [["ab", "cde"], [], ["f"], ["ghij"]]
  assert tokenizer.spread_sample(parts, 10) == ["ab", "cde", "f", "ghij"]  # just fits
  assert tokenizer.spread_sample(parts, 9) == ["ab", "cd", "f", "ghij"]
  assert tokenizer.spread_sample(parts, 10**9) == ["ab", "cde", "f", "ghij"]
  assert tokenizer.spread_sample([], 10) == []


def test_spread_sample_is_bounded_spread_and_reads_only_what_it_needs():
  parts = [Part(f"{k}{i:08d}," for i in range(1000)) for k in range(8)]  # texts of 10 chars
  sample = tokenizer.spread_sample(parts, 400)
  assert sum(map(len, sample)) == 400
  # 50 characters from the start of each part, in order
  assert sample == [f"{k}{i:08d}," for k in range(8) for i in range(5)]
  assert [p.read for p in parts] == [6] * 8  # one text past its share, to know there is more
  # a share a short part cannot fill goes to the others; a text crossing a share is cut
  short = [["a" * 10], ["b" * 1000], ["c" * 1000], ["d" * 7, "d" * 13]]
  sample = tokenizer.spread_sample(short, 400)
  assert sample == ["a" * 10, "b" * 185, "c" * 185, "d" * 7, "d" * 13]
  assert tokenizer.spread_sample(short, 400) == sample  # deterministic


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_bpe_round_trip(tmp_path, text):
  tok = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS))
  enc = tok.encode(text, add_special_tokens=False)
  assert tok.token_to_id(EOS) not in enc.ids
  assert tok.decode(enc.ids) == text
  assert tok.decode(enc.ids, skip_special_tokens=False) == text


def test_bpe_eos_is_one_special_token(tmp_path):
  tok = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS))
  eos = tok.token_to_id(EOS)
  ids = tok.encode("end" + EOS + "start", add_special_tokens=False).ids
  assert ids.count(eos) == 1
  assert tok.decode(ids) == "endstart"  # special tokens are skipped by default
  assert tok.decode(ids, skip_special_tokens=False) == "end" + EOS + "start"


def test_bpe_learns_merges(tmp_path):
  tok = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS))
  text = "the quick brown fox jumps over the lazy dog."
  assert len(tok.encode(text).ids) < len(text.encode("utf-8"))


def test_empty_training_split(tmp_path):
  for kind in ("bpe", "char"):
    with pytest.raises(TokenizerError, match="training split is empty"):
      tokenizer.get_tokenizer(_cfg(kind), str(tmp_path), Corpus(["", ""]))
  assert _cache_files(str(tmp_path)) == []


# ----------------------------------------------------------------------------- char


def test_char_vocab_matches_nanogpt(tmp_path):
  text = "hello world\n"
  tok = tokenizer.get_tokenizer(_cfg("char"), str(tmp_path), Corpus([text]))
  chars = sorted(set(text))  # nanoGPT: chars = sorted(list(set(data))); stoi = {ch: i}
  stoi = {ch: i for i, ch in enumerate(chars)}
  assert chars == ["\n", " ", "d", "e", "h", "l", "o", "r", "w"]
  vocab = tok.get_vocab()
  assert {c: vocab[c] for c in chars} == stoi
  assert vocab[EOS] == len(chars)  # eos right after the characters
  assert tok.token_to_id(EOS) == len(chars)
  assert tok.encode(text, add_special_tokens=False).ids == [stoi[c] for c in text]
  assert tok.decode([stoi[c] for c in text]) == text
  assert _cache_files(str(tmp_path))[0].startswith("char_")


def test_char_round_trip_and_eos(tmp_path):
  tok = tokenizer.get_tokenizer(_cfg("char"), str(tmp_path), Corpus(CORPUS + ROUND_TRIP[:5]))
  for text in CORPUS + ROUND_TRIP[:5]:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) == len(text)  # one token per character, whitespace included
    assert tok.decode(ids) == text
  eos = tok.token_to_id(EOS)
  ids = tok.encode("ab" + EOS + "c", add_special_tokens=False).ids
  assert ids[2] == eos and len(ids) == 4
  assert tok.decode(ids) == "abc"


def test_char_cached(tmp_path, monkeypatch):
  first = tokenizer.get_tokenizer(_cfg("char"), str(tmp_path), Corpus(CORPUS))
  monkeypatch.setattr(tokenizer, "_build_char", lambda *a: pytest.fail("rebuilt"))
  second = tokenizer.get_tokenizer(_cfg("char"), str(tmp_path), Corpus(CORPUS))
  assert first.to_str() == second.to_str()
  assert len(_cache_files(str(tmp_path))) == 1


def test_char_eos_that_is_a_corpus_character(tmp_path):
  tok = tokenizer.get_tokenizer(
    _cfg("char", eos_token="\n"), str(tmp_path), Corpus(["hello world\n"])
  )
  vocab = tok.get_vocab()
  assert len(set(vocab.values())) == len(vocab)  # ids are unique
  assert tok.token_to_id("\n") != tok.token_to_id(tokenizer.UNK)


# ----------------------------------------------------------------------------- file


def test_file_tokenizer_loads_a_saved_tokenizer_json(tmp_path):
  trained = tokenizer.get_tokenizer(_cfg(), str(tmp_path / "a"), Corpus(CORPUS))
  path = tmp_path / "tokenizer.json"
  trained.save(str(path))
  loaded = tokenizer.get_tokenizer(_cfg("file", path=str(path)), str(tmp_path / "b"), _never)
  assert tokenizer.identity(loaded) == tokenizer.identity(trained)
  assert loaded.encode(ROUND_TRIP[4]).ids == trained.encode(ROUND_TRIP[4]).ids
  assert _cache_files(str(tmp_path / "b")) == []  # nothing trained or cached


def test_file_tokenizer_missing_path(tmp_path):
  for path in ("", str(tmp_path / "missing.json"), str(tmp_path)):
    with pytest.raises(TokenizerError, match=r"config\.data\.tokenizer\.path"):
      tokenizer.get_tokenizer(_cfg("file", path=path), str(tmp_path), _never)


def test_missing_eos_names_the_field(tmp_path):
  trained = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS))
  path = tmp_path / "tokenizer.json"
  trained.save(str(path))
  with pytest.raises(TokenizerError, match=r"config\.data\.tokenizer\.eos_token.*'</s>'"):
    tokenizer.get_tokenizer(_cfg("file", path=str(path), eos_token="</s>"), str(tmp_path), _never)


def test_unknown_kind(tmp_path):
  with pytest.raises(TokenizerError, match=r"config\.data\.tokenizer\.kind.*'sentencepiece'"):
    tokenizer.get_tokenizer(_cfg("sentencepiece"), str(tmp_path), Corpus(CORPUS))
  assert _cache_files(str(tmp_path)) == []


# ----------------------------------------------------------------------------- identity


def test_identity(tmp_path):
  bpe = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS))
  bpe_again = hf_tokenizers.Tokenizer.from_str(bpe.to_str())
  char = tokenizer.get_tokenizer(_cfg("char"), str(tmp_path), Corpus(CORPUS))
  other_bpe = tokenizer.get_tokenizer(_cfg(), str(tmp_path), Corpus(CORPUS[:2]))
  assert tokenizer.identity(bpe) == tokenizer.identity(bpe_again) == tokenizer.identity(bpe)
  assert len({tokenizer.identity(t) for t in (bpe, char, other_bpe)}) == 3
  assert isinstance(tokenizer.identity(bpe), str) and len(tokenizer.identity(bpe)) == 16


# ----------------------------------------------------------------------------- bytes per token


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_token_bytes_sum_to_the_texts_utf8_bytes(tmp_path, kind):
  """Bits per byte divides by these: for byte-level BPE and characters they are exact, on
  multi-byte text and on text never seen in training; end-of-text covers no byte."""
  tok = tokenizer.get_tokenizer(_cfg(kind), str(tmp_path), Corpus(CORPUS + ROUND_TRIP[:5]))
  table = tokenizer.token_bytes(tok)
  assert len(table) == tok.get_vocab_size() and table[tok.token_to_id(EOS)] == 0
  texts = ROUND_TRIP if kind == "bpe" else ROUND_TRIP[:5]  # char: only characters it knows
  for text in texts:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert table[ids].sum() == len(text.encode("utf-8")), text
  ids = tok.encode(CORPUS[0] + EOS + CORPUS[2]).ids
  assert table[ids].sum() == len((CORPUS[0] + CORPUS[2]).encode("utf-8"))


def test_token_bytes_of_wordpiece_drop_continuation_marks(tmp_path):
  tok = tokenizer.get_tokenizer(
    _cfg("wordpiece", vocab_size=200, eos_token="[SEP]"), str(tmp_path), Corpus(CORPUS)
  )
  table = tokenizer.token_bytes(tok)
  assert all(table[tok.token_to_id(t)] == 0 for t in tokenizer.BERT_SPECIALS)
  ids = tok.encode("the lazy dog", add_special_tokens=False).ids
  assert table[ids].sum() == len("thelazydog")  # the words' bytes; spaces between are not tokens


# ----------------------------------------------------------------------------- padding files


def test_a_tokenizer_json_that_pads_and_truncates_is_loaded_plain(tmp_path):
  """Published tokenizer.json files often pad and truncate every encoding (MiniLM: to 128);
  loaded from a file, an import or a run, they give the text's tokens and nothing else, so
  the rows and documents equal those of the same tokenizer without the settings."""
  plain = tokenizer.get_tokenizer(
    _cfg("wordpiece", vocab_size=200, eos_token="[SEP]"), str(tmp_path), Corpus(CORPUS)
  )
  padding = hf_tokenizers.Tokenizer.from_str(plain.to_str())
  padding.enable_padding(length=24, pad_id=0, pad_token="[PAD]")
  padding.enable_truncation(max_length=6)
  path = tmp_path / "hf" / "tokenizer.json"
  path.parent.mkdir()
  padding.save(str(path))
  texts = [t for t in CORPUS + ROUND_TRIP if t]
  assert [len(e.ids) for e in padding.encode_batch(texts)] == [24] * len(texts)  # cut, padded
  loaded = [
    tokenizer.get_tokenizer(_cfg("file", path=str(path), eos_token="[SEP]"), str(tmp_path), _never),
    tokenizer.load(str(path)),
    tokenizer.from_str(path.read_text()),
    hf_conversion.read_tokenizer(str(path.parent), "bert"),
  ]
  want = [e.ids for e in plain.encode_batch(texts)]
  for tok in loaded:
    assert tok.padding is None and tok.truncation is None
    assert [e.ids for e in tok.encode_batch(texts)] == want
    # one identity with the plain tokenizer, another than the padding one's: caches made
    # with the padding tokenizer (rows full of [PAD]) are never reused
    assert tokenizer.identity(tok) == tokenizer.identity(plain) != tokenizer.identity(padding)
  examples = [{"sentence": t, "label": 0} for t in texts]
  rows, _ = glue.encode(examples, "sst2", loaded[0], 64)
  plain_rows, _ = glue.encode(examples, "sst2", plain, 64)
  for key in plain_rows:
    np.testing.assert_array_equal(rows[key], plain_rows[key])
