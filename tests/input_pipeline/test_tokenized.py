"""Tokenized datasets on disk (input_pipeline/corpora/tokenized.py) and the prepare entry point: pieces,
parallel workers, interruption, tokenizer identity, other tfds datasets, bad records."""

import filecmp
import glob
import os
import signal
import sys
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import common
from input_pipeline import bert_data, lm_data, tokenizer
from input_pipeline.corpora import local_text, sources, tokenized
from tests import helpers


def _corpus(tmp_path, n=60):
  folder = tmp_path / "corpus"
  folder.mkdir(exist_ok=True)
  for i in range(n):
    (folder / f"{i:03d}.txt").write_text(
      f"Document {i} begins here. It has a second sentence, number {i * 7}.\n"
      + "More words follow. " * (i % 5)
      + "\n"
    )
  return str(folder / "*.txt")


def _data(tmp_path, files, kind="char", **overrides):
  data = common.data_config()
  data.data_dir = str(tmp_path / "tfds")
  data.files = files
  data.tokenizer.kind = kind
  data.tokenizer.vocab_size = 300
  data.update(overrides)
  return data


def _setup(tmp_path, **overrides):
  data = _data(tmp_path, _corpus(tmp_path), **overrides)
  built = sources.builders(data)
  return data, built[""], tokenized.tokenizer_for(data, built)


def _files(path):
  return sorted(f for f in os.listdir(path) if not f.startswith("."))


def test_documents_mode_is_the_eos_joined_stream(tmp_path):
  data, b, tok = _setup(tmp_path)
  out = tokenized.prepare(data, b, "train", tok, "documents")
  split = tokenized.open_split(data, b, "train", tok, "documents")
  eos = tok.token_to_id(data.tokenizer.eos_token)
  expected, _ = lm_data.tokenize_stream(tok, sources.texts(b, "train", "text"), eos)
  np.testing.assert_array_equal(split.stream.read(0, len(split.stream)), expected)
  assert split.stream.arrays[0].dtype == np.uint16  # a small vocabulary: 2 bytes a token
  offsets = split.document_offsets()
  assert offsets[0] == 0 and offsets[-1] == len(expected)
  assert (expected[offsets[1:] - 1] == eos).all()  # every document ends with EOS
  m = split.manifest
  assert m["documents"] == len(offsets) - 1 == len(list(sources.texts(b, "train", "text")))
  assert m["tokenizer"] == tokenizer.identity(tok) and m["mode"] == "documents"
  assert out == split.path and out.startswith(
    os.path.join(data.data_dir, "tokenized", "local_text")
  )
  # rerunning is a no-op: nothing is rewritten
  before = {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in _files(out)}
  tokenized.prepare(data, b, "train", tok, "documents")
  assert {f: os.stat(os.path.join(out, f)).st_mtime_ns for f in _files(out)} == before


def test_sentences_mode_matches_the_sentence_tokenizer(tmp_path):
  data, b, tok = _setup(tmp_path, prepare_pieces=3)
  tokenized.prepare(data, b, "train", tok, "sentences")
  split = tokenized.open_split(data, b, "train", tok, "sentences")
  expected = [
    d for d in tokenized.tokenize_documents(tok, list(sources.texts(b, "train", "text"))) if d
  ]
  got = split.documents()
  assert len(got) == len(expected) == split.manifest["documents"]
  for g, e in zip(got, expected):
    assert len(g) == len(e) and all(np.array_equal(x, y) for x, y in zip(g, e))


def test_pieces_and_workers_do_not_change_the_data(tmp_path):
  data, b, tok = _setup(tmp_path)
  one = tokenized.prepare(data, b, "train", tok, "documents")
  stream = tokenized.open_split(data, b, "train", tok, "documents").stream
  whole = stream.read(0, len(stream))
  split4 = ml_collections.ConfigDict(
    dict(data.to_dict(), tokenized_dir=str(tmp_path / "four"), prepare_pieces=4)
  )
  # two workers, each its own pieces; the manifest appears only when both are done
  tokenized.prepare(split4, b, "train", tok, "documents", process_index=1, process_count=2)
  with pytest.raises(
    sources.DataError, match=r"not tokenized .*\(2 pieces done\).*input_pipeline\.prepare"
  ):
    tokenized.open_split(split4, b, "train", tok, "documents")
  tokenized.prepare(split4, b, "train", tok, "documents", process_index=0, process_count=2)
  four = tokenized.open_split(split4, b, "train", tok, "documents")
  assert len(four.stream.arrays) == 4 and len(_files(one)) == 4
  np.testing.assert_array_equal(four.stream.read(0, len(four.stream)), whole)
  np.testing.assert_array_equal(
    four.document_offsets(),
    tokenized.open_split(data, b, "train", tok, "documents").document_offsets(),
  )
  # reads across piece boundaries equal reads of the whole stream
  starts = np.arange(0, len(whole) - 50, 37)
  np.testing.assert_array_equal(
    four.stream.spans(starts, 50), whole[starts[:, None] + np.arange(50)]
  )


def test_interrupted_preparation_resumes_at_the_missing_piece(tmp_path, monkeypatch):
  data, b, tok = _setup(tmp_path, prepare_pieces=3)
  real = tokenized._prepare_piece
  calls = []

  def crash_on_second(prefix, *args):
    calls.append(prefix)
    if len(calls) == 2:
      folder, name = os.path.split(prefix)
      with open(os.path.join(folder, f".tmp-{os.getpid()}-{name}.tokens.bin"), "wb") as f:
        f.write(b"\0\1half")  # a half-written file, as a kill would leave
      raise KeyboardInterrupt
    return real(prefix, *args)

  monkeypatch.setattr(tokenized, "_prepare_piece", crash_on_second)
  with pytest.raises(KeyboardInterrupt):
    tokenized.prepare(data, b, "train", tok, "documents")
  path = tokenized.directory(data, b, "train", "documents", tok)
  assert not os.path.exists(os.path.join(path, "manifest.json"))
  with pytest.raises(sources.DataError, match=r"\(1 pieces done\)"):
    tokenized.open_split(data, b, "train", tok, "documents")
  first_piece = os.path.join(path, "piece-00000-of-00003.tokens.bin")
  stamp = os.stat(first_piece).st_mtime_ns
  monkeypatch.setattr(tokenized, "_prepare_piece", real)
  tokenized.prepare(data, b, "train", tok, "documents")
  assert os.stat(first_piece).st_mtime_ns == stamp  # the finished piece was kept
  assert not [f for f in os.listdir(path) if f.startswith(".tmp-")]  # leftovers removed
  split = tokenized.open_split(data, b, "train", tok, "documents")
  fresh = ml_collections.ConfigDict(dict(data.to_dict(), tokenized_dir=str(tmp_path / "fresh")))
  tokenized.prepare(fresh, b, "train", tok, "documents")
  other = tokenized.open_split(fresh, b, "train", tok, "documents")
  np.testing.assert_array_equal(
    split.stream.read(0, len(split.stream)), other.stream.read(0, len(other.stream))
  )


def test_another_tokenizer_is_refused(tmp_path):
  data, b, tok = _setup(tmp_path)
  default = tokenized.prepare(data, b, "train", tok, "documents")
  data.tokenizer.kind = "bpe"
  bpe = tokenized.tokenizer_for(data, {"": b})
  # by default every tokenizer has its own copy (a vocabulary sweep just works) ...
  assert tokenized.prepare(data, b, "train", bpe, "documents") != default
  # ... while an explicit tokenized_dir holds one tokenization and refuses another
  data.tokenized_dir = str(tmp_path / "shared")
  tokenized.prepare(data, b, "train", tok, "documents")
  for call in (tokenized.prepare, tokenized.open_split):
    with pytest.raises(
      tokenizer.TokenizerError,
      match=r"config\.data\.tokenizer: .* another tokenizer \(WordLevel, vocab "
      r"\d+; this run's is BPE, vocab 300.*config\.data\.tokenized_dir",
    ):
      call(data, b, "train", bpe, "documents")


def test_truncated_token_file_is_a_clear_error(tmp_path):
  data, b, tok = _setup(tmp_path)
  path = tokenized.prepare(data, b, "train", tok, "documents")
  file = os.path.join(path, "piece-00000-of-00001.tokens.bin")
  with open(file, "r+b") as f:
    f.truncate(10)
  with pytest.raises(sources.DataError, match=r"has 10 bytes, not the \d+ .*prepare it again"):
    tokenized.open_split(data, b, "train", tok, "documents")


def test_mixture_sources_inherit_fields_and_get_their_own_tokenized_dir(tmp_path):
  data = _data(tmp_path, "a/*.txt", tokenized_dir=str(tmp_path / "tok"), eval_split="test")
  data.mixture.a = common.mixture_source(2.0)
  data.mixture.b = common.mixture_source(1.0, files="b/*.txt", tokenized_dir="elsewhere")
  (a, src_a, wa), (b, src_b, wb) = sources.named(data)
  assert (a, wa, b, wb) == ("a", 2.0, "b", 1.0)
  assert src_a.files == "a/*.txt" and src_b.files == "b/*.txt"
  assert src_a.eval_split == src_b.eval_split == "test"
  assert src_a.tokenized_dir == str(tmp_path / "tok" / "a") and src_b.tokenized_dir == "elsewhere"
  assert "mixture" not in src_a
  data.mixture.c = ml_collections.ConfigDict({"weight": 1.0, "vocab_size": 3})
  with pytest.raises(
    sources.DataError, match=r"config\.data\.mixture\.c\.vocab_size: not a dataset field"
  ):
    sources.named(data)
  with pytest.raises(ValueError, match=r"unknown fields \['tokenizer'\]"):
    common.mixture_source(1.0, tokenizer="bpe")


def _bert_split(tmp_path, pieces):
  data = _data(
    tmp_path,
    _corpus(tmp_path),
    kind="wordpiece",
    prepare_pieces=pieces,
    tokenized_dir=str(tmp_path / f"tok{pieces}"),
  )
  data.tokenizer.eos_token = "[SEP]"
  from configs import bert

  data.mlm = bert.mlm_config(32)
  built = sources.builders(data)
  tok = tokenized.tokenizer_for(data, built)
  tokenized.prepare(data, built[""], "train", tok, "sentences")
  return data, tok, tokenized.open_split(data, built[""], "train", tok, "sentences")


def test_bert_examples_are_built_once_per_piece_in_parallel_and_cached(tmp_path):
  data, tok, split = _bert_split(tmp_path, pieces=3)
  with pytest.raises(sources.DataError, match=r"examples of .* are not built .*piece 0 of 3"):
    bert_data.open_examples(split, data, seq_len=32, seed=[0, 0])
  # two workers share the pieces: 0 and 2, then 1
  bert_data.build_examples(
    split, data, tok, seq_len=32, seed=[0, 0], process_index=0, process_count=2
  )
  with pytest.raises(sources.DataError, match=r"piece 1 of 3 missing"):
    bert_data.open_examples(split, data, seq_len=32, seed=[0, 0])
  bert_data.build_examples(
    split, data, tok, seq_len=32, seed=[0, 0], process_index=1, process_count=2
  )
  first = bert_data.open_examples(split, data, seq_len=32, seed=[0, 0])
  cache = bert_data.examples_dir(split, data, 32, [0, 0])
  stamps = {f: os.stat(os.path.join(cache, f)).st_mtime_ns for f in os.listdir(cache)}
  bert_data.build_examples(split, data, tok, seq_len=32, seed=[0, 0])  # a no-op now
  assert {f: os.stat(os.path.join(cache, f)).st_mtime_ns for f in os.listdir(cache)} == stamps
  # the same as one worker building everything
  data1 = ml_collections.ConfigDict(dict(data.to_dict(), tokenized_dir=str(tmp_path / "again")))
  tokenized.prepare(data1, sources.builders(data1)[""], "train", tok, "sentences")
  again = tokenized.open_split(data1, sources.builders(data1)[""], "train", tok, "sentences")
  bert_data.build_examples(again, data1, tok, seq_len=32, seed=[0, 0])
  other = bert_data.open_examples(again, data1, seq_len=32, seed=[0, 0])
  for key in ("lengths", "a_lengths", "nsp_labels"):
    np.testing.assert_array_equal(first[key], other[key])
  rows = np.arange(first["tokens"].shape[0])
  np.testing.assert_array_equal(first["tokens"].take(rows), other["tokens"].take(rows))
  assert len(first["tokens"].arrays) == 3 and first["tokens"].arrays[0].dtype == np.uint16
  # rows come back in the order asked, across pieces
  shuffled = np.random.default_rng(0).permutation(rows)
  np.testing.assert_array_equal(
    first["tokens"].take(shuffled), first["tokens"].take(rows)[shuffled]
  )
  assert bert_data.examples_dir(split, data, 32, [1, 0]) != cache  # another seed, other pairs
  # every pair is [CLS] A [SEP] B [SEP] within one piece's documents
  tokens = first["tokens"].take(rows)
  assert (tokens[:, 0] == tok.token_to_id("[CLS]")).all()
  assert (tokens[rows, first["lengths"] - 1] == tok.token_to_id("[SEP]")).all()


# ----------------------------------------------------------------------------- any tfds dataset


# TFRecord files are read through TensorFlow (7 s to import): those tests share one worker.
FILE_FORMATS = ["array_record", pytest.param("tfrecord", marks=pytest.mark.xdist_group("tf"))]


class RawTextForTests(tfds.core.GeneratorBasedBuilder):
  """A tfds dataset with only a train split and raw-bytes text, some of it invalid UTF-8."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {"content": tfds.features.Tensor(shape=(), dtype=np.object_)}
      )
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(200):
      if i % 50 == 7:
        text = b"caf\xe9 is latin-1"
      elif i % 50 == 8:
        text = b"   \n "
      else:
        text = f"Record {i} says hello. It is fine.".encode()
      yield i, {"content": text}


@pytest.mark.slow
@pytest.mark.parametrize("file_format", FILE_FORMATS)
def test_any_tfds_dataset_by_name_with_bad_records_and_no_validation_split(tmp_path, file_format):
  data = _data(tmp_path, "", dataset="raw_text_for_tests", text_key="content", prepare_pieces=3)
  RawTextForTests(data_dir=data.data_dir).download_and_prepare(file_format=file_format)
  built = sources.builders(data)
  tok = tokenized.tokenizer_for(data, built)
  with pytest.raises(
    sources.DataError,
    match=r"split 'validation' is not in raw_text_for_tests \(has train\); carve "
    r"one out of train, e\.g\. --config\.data\.train_split='train\[5%:\]'",
  ):
    tokenized.prepare_all(data, "documents", tok, built)
  data.update(train_split="train[5%:]", eval_split="train[:5%]")
  dirs = tokenized.prepare_all(data, "documents", tok, built)
  assert len(dirs) == 2
  train = tokenized.open_split(data, built[""], "train[5%:]", tok, "documents")
  val = tokenized.open_split(data, built[""], "train[:5%]", tok, "documents")
  assert train.manifest["invalid_utf8"] + val.manifest["invalid_utf8"] == 4
  assert train.manifest["empty"] + val.manifest["empty"] == 4
  assert train.manifest["documents"] + val.manifest["documents"] == 192
  assert val.manifest["documents"] == 10  # the first 10 records: none of them bad
  assert "skipped 4 empty documents, 4 invalid utf8 documents" in train.summary()


# ----------------------------------------------------------------------------- the entry point


@pytest.mark.slow
def test_prepare_entry_point_two_workers_equal_one(tmp_path):
  files = _corpus(tmp_path, n=40)

  def run(tokenized_dir, *worker):
    return helpers.Running(
      [
        sys.executable,
        "-m",
        "input_pipeline.prepare",
        "--config=configs/gpt.py:smoke",
        f"--config.data.files={files}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
        "--config.data.tokenizer.kind=char",
        "--config.data.prepare_pieces=4",
        "--config.data.doc_split=file",
        "--config.data.validation_fraction=0.05",
        f"--config.data.tokenized_dir={tokenized_dir}",
        *worker,
      ],
      dict(os.environ),
    )

  single = run(tmp_path / "one")
  out = single.finish()
  assert single.proc.returncode == 0, out
  workers = [run(tmp_path / "two", "--process_count=2", f"--process_index={i}") for i in range(2)]
  outputs = [w.finish() for w in workers]
  assert all(w.proc.returncode == 0 for w in workers), outputs
  for split, pieces in (
    ("train.documents", 4),
    ("validation.documents", 4),
  ):  # the same runs of shards
    one, two = tmp_path / "one" / split, tmp_path / "two" / split
    names = _files(one)
    assert names == _files(two) and "manifest.json" in names and len(names) == pieces * 3 + 1
    match, mismatch, errors = filecmp.cmpfiles(one, two, names, shallow=False)
    assert not mismatch and not errors, mismatch
  again = run(tmp_path / "one")
  out = again.finish()
  assert again.proc.returncode == 0 and "data train: local_text" in out, out
  # a config error exits 2 with one line
  bad = helpers.run_python(
    [
      sys.executable,
      "-m",
      "input_pipeline.prepare",
      "--config=configs/gpt.py:smoke",
      f"--config.data.files={tmp_path / 'nothing*.txt'}",
    ],
    os.environ,
  )
  assert bad.returncode == 2 and "config.data.files: no file matches" in bad.stderr


@pytest.mark.slow
def test_prepare_killed_with_sigkill_resumes_to_the_same_data(tmp_path):
  """kill -9 in the middle of a preparation, rerun: the finished pieces are kept, the rest is
  done, and the result equals an uninterrupted preparation byte for byte."""
  stdlib = os.path.join(os.path.dirname(os.__file__), "*.py")

  def command(tokenized_dir):
    return [
      sys.executable,
      "-m",
      "input_pipeline.prepare",
      "--config=configs/gpt.py:smoke",
      f"--config.data.files={stdlib}",
      f"--config.data.data_dir={tmp_path / 'tfds'}",
      "--config.data.tokenizer.kind=char",
      "--config.data.prepare_pieces=64",
      f"--config.data.tokenized_dir={tokenized_dir}",
    ]

  reference = helpers.run_python(command(tmp_path / "straight"), os.environ)
  assert reference.returncode == 0, reference.stderr[-3000:]
  train = tmp_path / "killed" / "train.documents"
  killed = helpers.Running(command(tmp_path / "killed"), dict(os.environ))
  written = lambda: len(list(train.glob("piece-*.json"))) >= 2
  assert killed.caught(written, timeout=300), "finished before it could be killed"
  killed.signal(signal.SIGKILL)
  killed.finish()
  done = sorted(p.name for p in train.glob("piece-*.json"))
  assert 2 <= len(done) < 64 and not (train / "manifest.json").exists()
  stamps = {name: (train / name).stat().st_mtime_ns for name in done}
  rerun = helpers.run_python(command(tmp_path / "killed"), os.environ)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert all((train / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())
  for split in ("train.documents", "validation.documents"):
    ours, theirs = tmp_path / "killed" / split, tmp_path / "straight" / split
    names = sorted(os.listdir(theirs))
    assert sorted(os.listdir(ours)) == names  # no temporary files left behind
    _, mismatch, errors = filecmp.cmpfiles(ours, theirs, names, shallow=False)
    assert not mismatch and not errors


# ----------------------------------------------------------------------------- batched paths


def _line_by_line_sentences(text):
  """The sentence splitter applied one line at a time (the reference for split_sentences)."""
  out = []
  for line in text.split("\n"):
    pieces = tokenized._SENTENCE_END.sub("\\1\n", line).split("\n")
    out.extend(s.strip() for s in pieces if s.strip())
  return out


def test_split_sentences_equals_the_line_by_line_split():
  rng = np.random.default_rng(0)
  alphabet = list("aZ9 .!?\n\t\"')([]") + ["\u00a0", "\x1c", "\r", "\u2028", "\u00e9"]
  for _ in range(3000):
    text = "".join(rng.choice(alphabet, int(rng.integers(0, 40))))
    assert tokenized.split_sentences(text) == _line_by_line_sentences(text), repr(text)


TRICKY = [
  "The dog. Hello dog!",
  "",
  "   \n ",
  "Played.\n\nUnbelievable",
  "x",
  "\u00fcn\u00efc\u00f6d\u00e9 \u65e5\u672c\u8a9e \U0001f600. \u03a9\u03bc\u03ad\u03b3\u03b1 "
  "\u2014 \u201cquotes\u201d!",
  "tabs\tand\r\nCRLF lines. Next one",
  "a" * 3000 + ". B",
  "<|endoftext|> inside. [SEP] too",
  "\x1f control. Chars \u200b here",
]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "char"])
def test_batched_tokenization_equals_encoding_each_document_alone(tmp_path, kind, monkeypatch):
  """Large batches (cut by documents and by characters), both modes: exactly the ids of
  tok.encode on each document (or sentence) alone."""
  texts = TRICKY * 2 + [f"Document {i}. It says {i * 7}, then stops." for i in range(40)]
  cfg = common.data_config().tokenizer
  cfg.update(kind=kind, vocab_size=300, eos_token="[SEP]" if kind == "wordpiece" else cfg.eos_token)
  tok = tokenizer.get_tokenizer(cfg, str(tmp_path), lambda: iter(texts))
  eos = tok.token_to_id(cfg.eos_token)
  alone = lambda text: tok.encode(text, add_special_tokens=False).ids
  monkeypatch.setattr(tokenized, "_CHUNK_CHARS", 2000)
  for chunk in (1, 7, 8192):
    got = list(tokenized.encode(tok, iter(texts), "documents", eos, {}, chunk))
    expected = [i for t in texts for i in alone(t) + [eos]]
    assert np.concatenate([t for t, _, _ in got]).tolist() == expected
    assert np.concatenate([d for _, d, _ in got]).tolist() == [len(alone(t)) + 1 for t in texts]
  # sentences: each sentence encoded alone; empty sentences, and documents of none, dropped
  docs = [[ids for ids in map(alone, _line_by_line_sentences(t)) if ids] for t in texts]
  kept = [d for d in docs if d]
  for chunk in (1, 7, 8192):
    stats = {"empty": 0}
    got = list(tokenized.encode(tok, iter(texts), "sentences", eos, stats, chunk))
    assert stats["empty"] == len(texts) - len(kept) > 0
    expected = [i for d in kept for s in d for i in s]
    assert np.concatenate([t for t, _, _ in got]).tolist() == expected
    assert np.concatenate([d for _, d, _ in got]).tolist() == [len(d) for d in kept]
    assert np.concatenate([s for _, _, s in got]).tolist() == [len(s) for d in kept for s in d]
  assert [[s.tolist() for s in d] for d in tokenized.tokenize_documents(tok, texts)] == docs
  # A document's sentences go to the tokenizer as one text, joined by a special token, unless
  # a text holds that token's own text: the same tokens as each sentence alone either way.
  sep = tokenized._separator(tok)[0]
  for some in ([t for t in texts if sep not in t], texts + [f"One {sep} two. Three"]):
    split = [tokenized.split_sentences(t) for t in some]
    counts = np.array([len(d) for d in split])
    joined = tokenized._encode_joined(tok, split, counts, some)
    assert (joined is None) == any(sep in t for t in some)
    each = tokenized._encode_each(tok, split)
    if joined is not None:
      assert [a.tolist() for a in joined] == [a.tolist() for a in each]
  # as BERT's example building takes them: documents of sentences as offsets into the tokens
  ours = bert_data.Sentences.from_lengths(*tokenized.encode_sentences(tok, texts))
  reference = bert_data.Sentences.from_lists(kept)
  assert ours.tokens.tolist() == reference.tokens.tolist() and ours[1:] == reference[1:]


def test_read_ahead_keeps_the_order_raises_errors_and_stops_with_its_reader():
  assert list(sources.read_ahead(iter(range(50)), depth=2)) == list(range(50))

  def failing():
    yield 1
    raise OSError("disk gone")

  got = []
  with pytest.raises(OSError, match="disk gone"):
    for item in sources.read_ahead(failing()):
      got.append(item)
  assert got == [1]
  produced = []

  def counted():
    for i in range(1000):
      produced.append(i)
      yield i

  reader = sources.read_ahead(counted(), depth=2)
  assert next(reader) == 0
  reader.close()  # a reader that stops early: the thread reads a few items past it, no more
  time.sleep(0.5)
  assert len(produced) <= 5, len(produced)


@pytest.mark.parametrize("file_format", FILE_FORMATS)
def test_batched_reads_equal_reading_one_record_at_a_time(tmp_path, file_format, monkeypatch):
  data = _data(tmp_path, "", dataset="raw_text_for_tests", text_key="content")
  RawTextForTests(data_dir=data.data_dir).download_and_prepare(file_format=file_format)
  b = sources.builder(data)
  if file_format == "array_record":
    source = b.as_data_source(split="train")
    values = [source[i]["content"] for i in range(len(source))]
    assert sources.RecordTexts(b, "train", "content").parser  # the text alone is parsed
  else:
    values = [e["content"] for e in tfds.as_numpy(b.as_dataset(split="train", shuffle_files=False))]
  expected = []
  for value in values:
    try:
      text = value.decode("utf-8")
    except UnicodeDecodeError:
      continue
    if text.strip():
      expected.append(text)
  for batch in (1, 7, 4096):
    stats = {"empty": 0, "invalid_utf8": 0}
    batches = list(sources.text_batches(b, "train", "content", stats=stats, batch=batch))
    assert [t for texts in batches for t in texts] == expected
    assert max(map(len, batches)) <= batch and stats == {"empty": 4, "invalid_utf8": 4}
  shards = [list(sources.texts(b, "train", "content", shard=(i, 3))) for i in range(3)]
  assert [t for s in shards for t in s] == expected
  # the tokenizer's training sample: the whole split when it fits, else bounded and spread
  monkeypatch.setattr(sources, "MIN_SAMPLE_PART_CHARS", 100)  # stretches of this tiny split
  assert sources.sample_texts(b, "train", "content", 10**6) == expected
  sample = sources.sample_texts(b, "train", "content", 1000)
  assert sum(map(len, sample)) == 1000
  assert sample == sources.sample_texts(b, "train", "content", 1000)  # deterministic
  at, where = 0, []  # each text of the sample (or its start) in the split, in order
  for text in sample:
    while not expected[at].startswith(text):
      at += 1
    where.append(at)
  assert where[0] == 0 and where[-1] > 0.9 * len(expected)  # stretches all over the split


@pytest.mark.parametrize("mode", ["documents", "sentences"])
def test_prepared_split_equals_encoding_each_record_alone(tmp_path, mode):
  """prepare (batched reads, batched encoding, pieces) against the slowest path: one record
  read, decoded and encoded at a time."""
  data, b, tok = _setup(tmp_path, kind="bpe", prepare_pieces=3)
  tokenized.prepare(data, b, "train", tok, mode)
  split = tokenized.open_split(data, b, "train", tok, mode)
  files = sorted(glob.glob(data.files))  # one document each, the train split's by their hash
  texts = [open(f, encoding="utf-8").read() for f in files]
  texts = [t for t in texts if t.strip() and not local_text.in_validation(t, 0.05)]
  alone = lambda text: tok.encode(text, add_special_tokens=False).ids
  eos = tok.token_to_id(data.tokenizer.eos_token)
  if mode == "documents":
    expected = [i for t in texts for i in alone(t) + [eos]]
    assert split.stream.read(0, len(split.stream)).tolist() == expected
    assert np.diff(split.document_offsets()).tolist() == [len(alone(t)) + 1 for t in texts]
  else:
    docs = [[s for s in map(alone, _line_by_line_sentences(t)) if s] for t in texts]
    assert [[s.tolist() for s in d] for d in split.documents()] == [d for d in docs if d]
