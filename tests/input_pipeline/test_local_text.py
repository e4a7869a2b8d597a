"""The local-text tfds builder (input_pipeline/corpora/local_text.py) and sources.py, on real files."""

import collections
import gzip
import json
import os
import socket

import pytest

from configs import common
from input_pipeline.corpora import local_text, sources

DataError = local_text.DataError


# ----------------------------------------------------------------------------- helpers


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def _write_gz(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write(text)
  return path


def _jsonl(records):
  return "".join(json.dumps(r) + "\n" for r in records)


def _data(data_dir, files="", **overrides):
  data = common.data_config()
  data.data_dir = str(data_dir)
  data.files = files if isinstance(files, str) else ",".join(str(f) for f in files)
  for key, value in overrides.items():
    data[key] = value
  return data


def _prepared(data_dir, files="", **overrides):
  b = sources.builder(_data(data_dir, files, **overrides))
  sources.prepare(b)
  return b


def _texts(b, split):
  """The texts of a split as tfds's copy holds them."""
  return [r["text"].decode() for r in b.as_data_source(split=split)]


def _doc(i):
  """A distinct document; its hash decides its split."""
  return f"document number {i}\nwith a second line, é and 日本 {i * 7919}\n"


# ----------------------------------------------------------------------------- formats


def test_txt_files_one_document_each(tmp_path):
  docs = [_doc(i) for i in range(30)]
  files = [_write(tmp_path / "in" / f"f{i:02d}.txt", d) for i, d in enumerate(docs)]
  b = _prepared(tmp_path / "tfds", files, validation_fraction=0.3)
  train, val = _texts(b, "train"), _texts(b, "validation")
  assert train and val
  assert collections.Counter(train + val) == collections.Counter(docs)
  assert b.info.splits["train"].num_examples == len(train)
  assert b.info.splits["validation"].num_examples == len(val)


def test_jsonl_with_custom_key(tmp_path):
  records = [{"body": _doc(i), "text": "not this field", "n": i} for i in range(30)]
  content = _jsonl(records[:10]) + "\n   \n" + _jsonl(records[10:])  # blank lines are skipped
  path = _write(tmp_path / "in" / "corpus.jsonl", content)
  b = _prepared(tmp_path / "tfds", str(path), jsonl_key="body", validation_fraction=0.3)
  got = _texts(b, "train") + _texts(b, "validation")
  assert sorted(got) == sorted(r["body"] for r in records)
  assert "not this field" not in got


def test_gz_and_jsonl_gz(tmp_path):
  plain = [_doc(i) for i in range(12)]
  in_jsonl = [_doc(100 + i) for i in range(12)]
  files = [_write_gz(tmp_path / "in" / f"p{i:02d}.txt.gz", d) for i, d in enumerate(plain)]
  files.append(_write_gz(tmp_path / "in" / "docs.jsonl.gz", _jsonl({"text": d} for d in in_jsonl)))
  b = _prepared(tmp_path / "tfds", files, validation_fraction=0.3)
  got = _texts(b, "train") + _texts(b, "validation")
  # decompressed text, not gzip bytes; the .jsonl.gz parsed line by line
  assert sorted(got) == sorted(plain + in_jsonl)


def test_comma_separated_paths_and_globs(tmp_path):
  a = [_write(tmp_path / "in" / f"a{i:02d}.txt", _doc(i)) for i in range(10)]
  b_ = [_write(tmp_path / "in" / "sub" / f"b{i:02d}.txt", _doc(50 + i)) for i in range(10)]
  single = _write(tmp_path / "other" / "single.txt", _doc(99))
  _write(tmp_path / "in" / "ignored.md", "not matched by the globs")
  (tmp_path / "in" / "dir.txt").mkdir()  # a directory matching a glob is skipped
  spec = f"{tmp_path}/in/*.txt , {tmp_path}/in/sub/b0?.txt,{single}"
  cfg = local_text.make_config(spec)
  assert cfg.files == tuple(str(p) for p in a + b_ + [single])
  b = _prepared(tmp_path / "tfds", spec, validation_fraction=0.3)
  got = _texts(b, "train") + _texts(b, "validation")
  assert sorted(got) == sorted(
    [_doc(i) for i in range(10)] + [_doc(50 + i) for i in range(10)] + [_doc(99)]
  )


def test_overlapping_patterns_do_not_duplicate_files(tmp_path):
  a = _write(tmp_path / "in" / "a.txt", _doc(1))
  b = _write(tmp_path / "in" / "b.txt", _doc(2))
  files = local_text.expand_files(f"{tmp_path}/in/*.txt,{a}")
  assert len(files) == len(set(files))
  assert files == [str(a), str(b)]
  docs = [text for _, text in local_text.read_documents(files, "file", "text")]
  assert sorted(docs) == sorted([_doc(1), _doc(2)])


def test_doc_split_file_vs_blank_line(tmp_path):
  blocks = [
    [f"file {f} block {k}: some words here\nand another line {f * 10 + k}" for k in range(8)]
    for f in range(4)
  ]
  files = []
  for f, bl in enumerate(blocks):
    # runs of blank lines and whitespace-only blocks give no extra documents
    text = "\n\n".join(bl[:4]) + "\n\n\n\n" + "\n\n".join(bl[4:]) + "\n\n   \n\n"
    files.append(_write(tmp_path / "in" / f"f{f}.txt", text))
  # 'file': one document per file
  whole = _prepared(tmp_path / "tfds", files, doc_split="file", validation_fraction=0.5)
  assert len(_texts(whole, "train")) + len(_texts(whole, "validation")) == 4
  assert sorted(_texts(whole, "train") + _texts(whole, "validation")) == sorted(
    p.read_text() for p in files
  )
  # 'blank_line': one document per non-empty block
  split = _prepared(tmp_path / "tfds", files, doc_split="blank_line", validation_fraction=0.5)
  got = _texts(split, "train") + _texts(split, "validation")
  assert len(got) == 32
  assert {t.strip() for t in got} == {b for bl in blocks for b in bl}
  assert split.builder_config.name != whole.builder_config.name


# ----------------------------------------------------------------------------- splits


def test_hash_split_is_a_partition_deterministic_and_stable(tmp_path):
  docs = [_doc(i) for i in range(40)]
  files = [_write(tmp_path / "in" / f"f{i:02d}.txt", d) for i, d in enumerate(docs)]
  first = _prepared(tmp_path / "tfds1", files, validation_fraction=0.3)
  second = _prepared(tmp_path / "tfds2", files, validation_fraction=0.3)
  train1, val1 = set(_texts(first, "train")), set(_texts(first, "validation"))
  train2, val2 = set(_texts(second, "train")), set(_texts(second, "validation"))
  # every document in exactly one split
  assert not train1 & val1
  assert train1 | val1 == set(docs)
  assert len(_texts(first, "train")) + len(_texts(first, "validation")) == len(docs)
  assert 0 < len(val1) < len(docs)
  # same documents -> same split, in a fresh data_dir
  assert (train1, val1) == (train2, val2)
  # adding files never moves an existing document to the other split
  more = [_write(tmp_path / "in" / f"g{i:02d}.txt", _doc(1000 + i)) for i in range(20)]
  grown = _prepared(tmp_path / "tfds1", files + more, validation_fraction=0.3)
  train3, val3 = set(_texts(grown, "train")), set(_texts(grown, "validation"))
  assert train3 & set(docs) == train1
  assert val3 & set(docs) == val1
  assert train3 | val3 == set(docs) | {_doc(1000 + i) for i in range(20)}


def test_tail_split_matches_nanogpt(tmp_path):
  # nanoGPT's prepare.py: n = len(data); train = data[:int(n*0.9)]; val = data[int(n*0.9):]
  line = "First Citizen:\nBefore we proceed any further, hear me speak. ü日\n\n"
  text = (line * 40)[:2003] + "\n"  # odd length so int(n*0.9) truncates
  n = len(text)
  assert n * 0.9 != int(n * 0.9)
  path = _write(tmp_path / "input.txt", text)
  b = _prepared(tmp_path / "tfds", str(path), split_by="tail", validation_fraction=0.1)
  train, val = _texts(b, "train"), _texts(b, "validation")
  assert train == [text[: int(n * 0.9)]]
  assert val == [text[int(n * 0.9) :]]


def test_tail_split_over_several_documents(tmp_path):
  docs = [_doc(i) * (i + 1) for i in range(6)]
  files = [_write(tmp_path / "in" / f"f{i}.txt", d) for i, d in enumerate(docs)]
  b = _prepared(tmp_path / "tfds", files, split_by="tail", validation_fraction=0.25)
  total = sum(map(len, docs))
  train, val = _texts(b, "train"), _texts(b, "validation")
  assert sum(map(len, train)) == int(total * 0.75)
  assert sum(map(len, train)) + sum(map(len, val)) == total
  # joined in file order, the pieces are the concatenated corpus cut at one point
  joined = "".join(docs)
  cut = int(total * 0.75)
  # each piece sits inside its own document, so its first occurrence gives the file order
  assert "".join(sorted(train, key=joined.index)) == joined[:cut]
  assert "".join(sorted(val, key=joined.index)) == joined[cut:]
  assert len(train) + len(val) in (len(docs), len(docs) + 1)  # at most one document is cut


# ----------------------------------------------------------------------------- configs, reuse


def test_config_name_tracks_the_inputs(tmp_path):
  a = _write(tmp_path / "in" / "a.txt", "alpha " * 50)
  b = _write(tmp_path / "in" / "b.txt", "gamma " * 50)  # same size as a: the path counts
  os.utime(b, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns))
  name_a = local_text.make_config(str(a)).name
  assert name_a == local_text.make_config(str(a)).name  # stable for the same inputs
  assert name_a.startswith("files_")
  assert local_text.make_config(str(b)).name != name_a
  assert local_text.make_config(f"{a},{b}").name != name_a
  assert local_text.make_config(str(a), validation_fraction=0.1).name != name_a
  assert local_text.make_config(str(a), split_by="tail").name != name_a
  assert local_text.make_config(str(a), doc_split="blank_line").name != name_a
  assert local_text.make_config(str(a), jsonl_key="body").name != name_a
  mtime = os.stat(a).st_mtime_ns
  _write(a, "alpha, edited " * 50)  # same path, new content (and size)
  assert local_text.make_config(str(a)).name != name_a
  _write(a, "ALPHA " * 50)  # same path and size as the original, edited later
  os.utime(a, ns=(mtime + 10**9, mtime + 10**9))
  assert local_text.make_config(str(a)).name != name_a


def test_new_files_never_reuse_stale_data(tmp_path):
  data_dir = tmp_path / "tfds"
  old = [_write(tmp_path / "old" / f"f{i}.txt", _doc(i)) for i in range(20)]
  new = [_write(tmp_path / "new" / f"f{i}.txt", _doc(500 + i)) for i in range(20)]
  b_old = _prepared(data_dir, old, validation_fraction=0.3)
  b_new = _prepared(data_dir, new, validation_fraction=0.3)
  assert b_old.builder_config.name != b_new.builder_config.name
  assert b_old.data_dir != b_new.data_dir
  assert set(_texts(b_new, "train") + _texts(b_new, "validation")) == {
    _doc(500 + i) for i in range(20)
  }
  # the old corpus is still there, untouched
  again = _prepared(data_dir, old, validation_fraction=0.3)
  assert set(_texts(again, "train") + _texts(again, "validation")) == {_doc(i) for i in range(20)}


def _tree(root):
  out = {}
  for dirpath, _, filenames in os.walk(root):
    for name in filenames:
      p = os.path.join(dirpath, name)
      out[p] = os.stat(p).st_mtime_ns
  return out


def test_reprepare_is_a_noop(tmp_path, monkeypatch):
  files = [_write(tmp_path / "in" / f"f{i}.txt", _doc(i)) for i in range(20)]
  b = _prepared(tmp_path / "tfds", files, validation_fraction=0.3)
  before = _tree(tmp_path / "tfds")
  texts_before = sorted(_texts(b, "train"))
  assert before

  def fail(*args, **kwargs):
    raise AssertionError("download_and_prepare called on a prepared dataset")

  monkeypatch.setattr(local_text.LocalText, "download_and_prepare", fail)
  fresh = sources.builder(_data(tmp_path / "tfds", files, validation_fraction=0.3))
  assert fresh.is_prepared()
  sources.prepare(fresh)
  assert _tree(tmp_path / "tfds") == before
  assert sorted(_texts(fresh, "train")) == texts_before


# ----------------------------------------------------------------------------- errors


def test_glob_without_match_names_the_field(tmp_path):
  _write(tmp_path / "in" / "a.txt", "text")
  with pytest.raises(DataError, match=r"config\.data\.files.*nothing\*\.txt"):
    sources.builder(_data(tmp_path / "tfds", f"{tmp_path}/in/a.txt,{tmp_path}/in/nothing*.txt"))
  with pytest.raises(DataError, match=r"config\.data\.files"):
    sources.builder(_data(tmp_path / "tfds", str(tmp_path / "missing.txt")))
  assert not (tmp_path / "tfds").exists() or not any((tmp_path / "tfds").iterdir())


def test_glob_matching_only_directories(tmp_path):
  (tmp_path / "in" / "d.txt").mkdir(parents=True)
  with pytest.raises(DataError, match=r"config\.data\.files.*no regular files"):
    local_text.make_config(f"{tmp_path}/in/*.txt")


def test_whitespace_only_files(tmp_path):
  files = [
    _write(tmp_path / "in" / "a.txt", "  \n\n\t \n"),
    _write(tmp_path / "in" / "b.txt", ""),
    _write(tmp_path / "in" / "c.jsonl", _jsonl([{"text": "   "}, {"text": "\n"}])),
  ]
  with pytest.raises(DataError, match=r"config\.data\.files.*no text"):
    _prepared(tmp_path / "tfds", files)
  with pytest.raises(DataError, match=r"config\.data\.files.*no text"):
    _prepared(tmp_path / "tfds", files, doc_split="blank_line")


def test_bad_jsonl_lines_are_skipped_and_counted(tmp_path, capsys):
  good = [{"text": _doc(i)} for i in range(40)]
  lines = (
    _jsonl(good[:20]) + "{not json\n" + _jsonl([{"content": "no text field"}]) + _jsonl(good[20:])
  )
  path = _write(tmp_path / "in" / "c.jsonl", lines)
  b = _prepared(tmp_path / "tfds", str(path))
  assert sorted(_texts(b, "train") + _texts(b, "validation")) == sorted(r["text"] for r in good)
  assert "skipped 2 bad jsonl lines" in capsys.readouterr().err


def test_jsonl_without_the_key_anywhere(tmp_path):
  path = _write(tmp_path / "in" / "c.jsonl", _jsonl([{"content": "a"}, {"content": "b"}]))
  with pytest.raises(DataError, match=r"config\.data\.jsonl_key: no line of .*c\.jsonl.*'text'"):
    _prepared(tmp_path / "tfds", str(path))


def test_invalid_utf8_and_empty_documents_are_skipped_and_counted(tmp_path, capsys):
  folder = tmp_path / "in"
  for i in range(30):
    _write(folder / f"{i:02d}.txt", _doc(i))
  (folder / "bad.txt").write_bytes(b"caf\xe9 latin-1, not UTF-8\n")
  _write(folder / "empty.txt", " \n\n ")
  b = _prepared(tmp_path / "tfds", str(folder / "*.txt"))
  texts = _texts(b, "train") + _texts(b, "validation")
  assert sorted(texts) == sorted(_doc(i) for i in range(30))
  assert "skipped 1 invalid utf8 documents, 1 empty documents" in capsys.readouterr().err


def test_blank_line_blocks_skip_only_the_invalid_block(tmp_path):
  path = tmp_path / "in" / "a.txt"
  path.parent.mkdir(parents=True)
  path.write_bytes(b"first block\n\nbad \xff block\n\n\n\nthird block\r\nsame block\n")
  b = _prepared(
    tmp_path / "tfds", str(path), doc_split="blank_line", split_by="tail", validation_fraction=0.01
  )
  texts = _texts(b, "train") + _texts(b, "validation")
  assert (
    "".join(sorted(texts)).strip() == "first blockthird block\nsame block"
  )  # CRLF as in text mode


def test_streamed_texts_are_the_tfds_copy_s(tmp_path):
  folder = tmp_path / "in"
  for i in range(30):
    _write(folder / f"{i:02d}.txt", _doc(i))
  b = _prepared(tmp_path / "tfds", str(folder / "*.txt"))
  stats = {"empty": 0, "invalid_utf8": 0}
  streamed = list(sources.texts(b, "train", "text", stats=stats))  # read from the files
  assert sorted(streamed) == sorted(_texts(b, "train"))  # what tfds's copy holds
  assert not any(stats.values())


def test_bad_options(tmp_path):
  _write(tmp_path / "a.txt", "text")
  with pytest.raises(DataError, match=r"config\.data\.doc_split"):
    local_text.make_config(str(tmp_path / "a.txt"), doc_split="line")
  with pytest.raises(DataError, match=r"config\.data\.split_by"):
    local_text.make_config(str(tmp_path / "a.txt"), split_by="random")
  for fraction in (0, 1, 1.5):
    with pytest.raises(DataError, match=r"config\.data\.validation_fraction"):
      local_text.make_config(str(tmp_path / "a.txt"), validation_fraction=fraction)


def test_too_few_documents_for_a_hash_split(tmp_path):
  path = _write(tmp_path / "one.txt", "a single document")
  with pytest.raises(DataError, match=r"config\.data\.validation_fraction.*empty"):
    _prepared(tmp_path / "tfds", str(path))


# ----------------------------------------------------------------------------- default corpus


def test_default_corpus_is_pydoc_topics(tmp_path):
  import pydoc_data.topics

  b = _prepared(tmp_path / "tfds")
  assert b.builder_config.name.startswith(local_text.DEFAULT_CORPUS + "_")
  assert b.builder_config.files == ()
  train, val = _texts(b, "train"), _texts(b, "validation")
  assert train and val
  assert all(t.strip() for t in train + val)
  expected = [t for t in pydoc_data.topics.topics.values() if t.strip()]
  assert collections.Counter(train + val) == collections.Counter(expected)


# ----------------------------------------------------------------------------- sources


@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError("tried to use the network")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_unprepared_tfds_dataset_says_tfds_build(tmp_path, no_network):
  data_dir = tmp_path / "empty"
  data_dir.mkdir()
  data = _data(data_dir, dataset="tiny_shakespeare")
  with pytest.raises(
    DataError,
    match=r"config\.data\.dataset.*tiny_shakespeare.*tfds build "
    r"tiny_shakespeare",
  ):
    sources.builder(data)
  assert not list(data_dir.rglob("*.array_record*")) and not list(data_dir.rglob("*.tfrecord*"))


def test_unknown_tfds_dataset_and_files_with_other_dataset(tmp_path, no_network):
  with pytest.raises(DataError, match=r"config\.data\.dataset.*not a tfds dataset"):
    sources.builder(_data(tmp_path, dataset="no_such_dataset_xyz"))
  with pytest.raises(DataError, match=r"config\.data\.files.*local_text"):
    sources.builder(_data(tmp_path, files="a.txt", dataset="tiny_shakespeare"))


def test_texts_errors_and_shards(tmp_path):
  files = [_write(tmp_path / "in" / f"f{i:02d}.txt", _doc(i)) for i in range(30)]
  b = _prepared(tmp_path / "tfds", files, validation_fraction=0.3)
  with pytest.raises(DataError, match=r"split 'test'.*train_split"):
    list(sources.texts(b, "test", "text"))
  with pytest.raises(DataError, match=r"config\.data\.text_key"):
    list(sources.texts(b, "train", "content"))
  whole = list(sources.texts(b, "train", "text"))
  parts = [list(sources.texts(b, "train", "text", shard=(i, 3))) for i in range(3)]
  assert all(parts)
  assert [t for p in parts for t in p] == whole


def test_tokenizer_training_sample_is_bounded_spread_and_deterministic(tmp_path, monkeypatch):
  """config.data.tokenizer.max_train_chars: a sample spread over the whole train split (every
  file), not its first characters; the whole split when it fits."""
  from input_pipeline import tokenizer
  from input_pipeline.corpora import tokenized

  files = [
    _write(
      tmp_path / "c" / f"{i}.txt",
      "\n\n".join(f"file {i} block {j}: " + "words " * (j % 7) for j in range(60)),
    )
    for i in range(6)
  ]
  data = _data(tmp_path / "d", files, doc_split="blank_line")
  b = sources.builders(data)[""]
  everything = list(sources.texts(b, "train", "text"))  # read from the files
  total = sum(map(len, everything))
  assert sources.sample_texts(b, "train", "text", total) == everything
  monkeypatch.setattr(sources, "MIN_SAMPLE_PART_CHARS", 200)  # several stretches of this tiny split
  limit = total // 5
  sample = sources.sample_texts(b, "train", "text", limit)
  assert sum(map(len, sample)) == limit
  assert sample == sources.sample_texts(b, "train", "text", limit)  # deterministic
  files_sampled = {t.split()[1] for t in sample if len(t.split()) > 2}
  assert files_sampled == {str(i) for i in range(6)}  # every file, not the first ones
  assert sources.sample_texts(b, "train", "text", 10**9) == everything
  # the tokenizer is trained on that sample (its cache key covers the sample's text)
  trained_on = []
  real = tokenizer._train_bpe
  monkeypatch.setattr(
    tokenizer, "_train_bpe", lambda texts, *a: trained_on.extend(texts) or real(texts, *a)
  )
  data.tokenizer.update(max_train_chars=limit, vocab_size=300)
  tokenized.tokenizer_for(data, {"": b})
  assert trained_on == sample
