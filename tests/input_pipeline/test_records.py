"""Record shards as corpora (input_pipeline/corpora/records.py): Parquet by row group, Arrow
dataset folders and .jsonl.zst, prepared through the local-text builder, and their bad inputs."""

import json
import os
import random
import string
import tracemalloc

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from configs import common
from input_pipeline.corpora import local_text, records, sources, tokenized
from pretrain.ground import storage
from pretrain.training import metrics, trainer
from tests import helpers


def _doc(i):
  return f"document {i}: the {['red', 'green', 'old'][i % 3]} boat sails, é 日本 {i * 7919}"


def _parquet(path, texts, row_group=7):
  """FineWeb's layout: a `text` column beside others, several row groups."""
  path.parent.mkdir(parents=True, exist_ok=True)
  table = pa.table(
    {"text": texts, "id": [str(i) for i in range(len(texts))], "score": [1.0] * len(texts)}
  )
  pq.write_table(table, path, row_group_size=row_group)
  return path


def _arrow_folder(folder, texts):
  """What `datasets.Dataset.save_to_disk` writes: Arrow stream shards and its JSON files."""
  folder.mkdir(parents=True)
  table = pa.table({"text": texts, "label": list(range(len(texts)))})
  with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
    with pa.ipc.new_stream(sink, table.schema) as writer:
      for batch in table.to_batches(max_chunksize=5):
        writer.write_batch(batch)
  (folder / "state.json").write_text(
    json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
  )
  (folder / "dataset_info.json").write_text("{}")
  return folder


def _zst(path, texts):
  """Dolma's layout: .jsonl.zst with `text` and `id`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  lines = [json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)]
  half = len(lines) // 2  # two frames, as concatenated shards have
  frames = ("".join(lines[:half]), "".join(lines[half:]))
  path.write_bytes(b"".join(zstandard.ZstdCompressor().compress(f.encode()) for f in frames))
  return path


def _read(files, key="text"):
  return [t for _, t in local_text.read_documents(local_text.expand_files(files), "file", key)]


def test_each_format_yields_its_documents_in_order(tmp_path):
  texts = [_doc(i) for i in range(40)]
  shard = _parquet(
    tmp_path / "fineweb" / "data" / "CC-MAIN-2024-10" / "000_00000.parquet", texts[:20]
  )
  folder = _arrow_folder(tmp_path / "saved", texts[20:30])
  dolma = _zst(tmp_path / "dolma" / "part-0.jsonl.zst", texts[30:])
  assert pq.ParquetFile(shard).num_row_groups == 3  # read a row group at a time
  got = _read(f"{tmp_path}/fineweb/data/CC-MAIN-*/*.parquet,{folder},{dolma}")
  assert got == texts


def test_a_prepared_parquet_corpus_splits_by_document(tmp_path):
  texts = [_doc(i) for i in range(60)]
  _parquet(tmp_path / "in" / "a.parquet", texts[:30])
  _parquet(tmp_path / "in" / "b.parquet", texts[30:])
  data = common.data_config()
  data.update(
    data_dir=str(tmp_path / "tfds"), files=f"{tmp_path}/in/*.parquet", validation_fraction=0.3
  )
  b = sources.builder(data)
  sources.prepare(b)
  train, val = (list(sources.texts(b, split, "text")) for split in ("train", "validation"))
  assert train and val and sorted(train + val) == sorted(texts)


def test_bad_shards_are_one_line_naming_the_file(tmp_path):
  shard = _parquet(tmp_path / "a.parquet", ["x", "y"])
  with pytest.raises(
    records.DataError,
    match=r"^config.data.jsonl_key: .*a.parquet has no column 'body'; its columns are text, id, score",
  ):
    _read(str(shard), key="body")
  damaged = tmp_path / "damaged.parquet"
  damaged.write_bytes(shard.read_bytes()[:-20])
  with pytest.raises(
    records.DataError, match=r"^config.data.files: .*damaged.parquet is not a readable Parquet file"
  ):
    _read(str(damaged))
  whole = _zst(tmp_path / "whole.jsonl.zst", [_doc(i) for i in range(200)])
  cut = tmp_path / "cut.jsonl.zst"
  cut.write_bytes(whole.read_bytes()[: os.path.getsize(whole) // 2])
  with pytest.raises(
    records.DataError, match=r"^config.data.files: .*cut.jsonl.zst is not a whole zstd file"
  ):
    _read(str(cut))
  folder = _arrow_folder(tmp_path / "saved", ["x"])
  with pytest.raises(records.DataError, match=r"its columns are text, label"):
    _read(str(folder), key="content")


def test_skip_bad_shards_skips_and_counts_them(tmp_path, capsys):
  good = _parquet(tmp_path / "a.parquet", ["first", "second"])
  damaged = tmp_path / "b.parquet"
  damaged.write_bytes(good.read_bytes()[:-20])
  whole = _zst(tmp_path / "c.jsonl.zst", [_doc(i) for i in range(200)])
  cut = tmp_path / "d.jsonl.zst"
  cut.write_bytes(whole.read_bytes()[: os.path.getsize(whole) // 2])
  files = local_text.expand_files(f"{tmp_path}/*.parquet,{tmp_path}/*.jsonl.zst")
  stats = {}
  docs = [t for _, t in local_text.read_documents(files, "file", "text", stats, True)]
  assert docs[:2] == ["first", "second"] and stats["bad_shards"] == 2
  texts = [_doc(i) for i in range(200)]
  assert docs[2:202] == texts and docs[202:] == texts[: len(docs) - 202]  # d up to its cut
  err = capsys.readouterr().err
  assert "skipped " + str(damaged) in err and "skipped " + str(cut) in err
  with pytest.raises(records.DataError, match="has no column 'body'"):  # a config error stops
    list(local_text.read_documents(files, "file", "body", {}, True))
  assert (
    local_text.make_config(str(good), skip_bad_shards=True).name
    != local_text.make_config(str(good)).name
  )


def test_a_large_shard_streams_in_bounded_memory(tmp_path):
  """A 16 MB Parquet shard of 256 KB row groups, and a .jsonl.zst of the same documents, read
  in a small fraction of their size: a row group, or 64 KB of the file, at a time."""
  rng = random.Random(0)
  words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(2000)]
  texts = [f"{i} " + " ".join(rng.choices(words, k=340)) for i in range(8000)]
  size = sum(map(len, texts))
  shards = (_parquet(tmp_path / "big.parquet", texts, 128), _zst(tmp_path / "big.jsonl.zst", texts))
  del texts
  for shard in shards:
    cfg = local_text.make_config(str(shard))
    tracemalloc.start()
    count = arrow_peak = 0
    arrow_before = pa.total_allocated_bytes()  # (what earlier tests of this process still hold)
    for _ in local_text.split_documents(cfg, "train"):
      count += 1
      if count % 100 == 0:
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count > 7000 and python_peak + arrow_peak < size / 8, (shard, python_peak, arrow_peak)


def _char_prepared(tmp_path, files, **fields):
  data = common.data_config()
  data.update(data_dir=str(tmp_path / "tfds"), files=files, **fields)
  data.tokenizer.update(kind="char", vocab_size=300)
  return data, sources.builders(data)[""]


def test_workers_read_only_their_own_shards(tmp_path, monkeypatch):
  """Shard-by-shard preparation: no tfds copy of the text; worker i of 2 reads shards i and
  i + 2 of 4 (prepare_pieces=4); the two workers' pieces give the manifest."""
  for k in range(4):
    _parquet(tmp_path / "c" / f"{k}.parquet", [_doc(20 * k + i) for i in range(20)])
  data, b = _char_prepared(tmp_path, f"{tmp_path}/c/*.parquet", prepare_pieces=4)
  tok = tokenized.tokenizer_for(data, {"": b})
  assert not (tmp_path / "tfds" / "local_text").exists()  # nothing but the tokenizer so far
  read = []
  real = records.parquet_texts
  monkeypatch.setattr(records, "parquet_texts", lambda p, k: read.append(p) or real(p, k))
  tokenized.prepare(data, b, "train", tok, "documents", process_index=1, process_count=2)
  assert [os.path.basename(p) for p in read] == ["1.parquet", "3.parquet"]
  tokenized.prepare(data, b, "train", tok, "documents", process_index=0, process_count=2)
  split = tokenized.open_split(data, b, "train", tok, "documents")
  assert [os.path.basename(p) for p in read[2:]] == ["0.parquet", "2.parquet"]
  train = [t for t in (_doc(i) for i in range(80)) if not local_text.in_validation(t, 0.05)]
  eos = tok.token_to_id(data.tokenizer.eos_token)
  expected = [i for t in train for i in tok.encode(t, add_special_tokens=False).ids + [eos]]
  assert split.stream.read(0, len(split.stream)).tolist() == expected


def test_damaged_shards_stop_or_are_skipped_and_counted(tmp_path):
  """A damaged shard met while tokenizing: one line naming it, whole pieces before it and
  nothing half-written; with data.skip_bad_shards, skipped and counted in the manifest."""
  for k in range(3):
    _parquet(tmp_path / "c" / f"{k}.parquet", [_doc(20 * k + i) for i in range(20)])
  good, tok_b = _char_prepared(tmp_path, f"{tmp_path}/c/*.parquet")
  tok = tokenized.tokenizer_for(good, {"": tok_b})
  damaged = tmp_path / "c" / "3.parquet"
  damaged.write_bytes((tmp_path / "c" / "0.parquet").read_bytes()[:-20])
  data, b = _char_prepared(tmp_path, f"{tmp_path}/c/*.parquet", prepare_pieces=4)
  with pytest.raises(records.DataError, match=r"^config.data.files: .*3.parquet is not a readable"):
    tokenized.prepare(data, b, "train", tok, "documents")
  out = tokenized.directory(data, b, "train", "documents", tok)
  whole = [f"piece-0000{k}-of-00004.{end}" for k in range(3) for end in ("docs.npy", "json")]
  whole += [f"piece-0000{k}-of-00004.tokens.bin" for k in range(3)]
  assert sorted(os.listdir(out)) == sorted(whole)  # no manifest, no temporary file
  data, b = _char_prepared(tmp_path, data.files, prepare_pieces=4, skip_bad_shards=True)
  tokenized.prepare(data, b, "train", tok, "documents")
  split = tokenized.open_split(data, b, "train", tok, "documents")
  assert split.manifest["bad_shards"] == 1 and "1 bad shards" in split.summary()


def _public_layouts(root):
  """A small corpus in FineWeb's layout (Parquet under data/CC-MAIN-*/) and one in Dolma's
  (.jsonl.zst with `text` and `id`) under `root`."""
  for shard in range(2):
    texts = [_doc(100 * shard + i) + " " + _doc(i) * 3 for i in range(100)]
    _parquet(root / "fineweb" / "data" / f"CC-MAIN-2024-1{shard}" / "000_00000.parquet", texts, 25)
    _zst(root / "dolma" / f"v1_7-{shard:04d}.jsonl.zst", texts[::-1])


def _trained_on_both(root, tmp_path, data_dir):
  """The smoke GPT trained on a mixture of the two corpora under `root` (a folder or a bucket)."""
  config = helpers.tiny_gpt_config(data_dir, **{"checkpoint.every": 0})
  config.data.mixture.fineweb = common.mixture_source(0.7, files=f"{root}/fineweb/data/CC-MAIN-*/*")
  config.data.mixture.dolma = common.mixture_source(0.3, files=f"{root}/dolma/*.jsonl.zst")
  result = trainer.train_and_evaluate(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  rows = [r for r in metrics.read_rows(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
  assert result.step == 6 and np.isfinite(rows[-1]["train/loss"])
  evals = [
    r for r in metrics.read_rows(tmp_path / "run" / "metrics.jsonl") if "eval/dolma/loss" in r
  ]
  assert evals and np.isfinite(evals[-1]["eval/fineweb/loss"])


@pytest.mark.slow
def test_the_smoke_gpt_trains_on_fineweb_and_dolma_layouts(tmp_path, data_dir):
  _public_layouts(tmp_path / "c")
  _trained_on_both(tmp_path / "c", tmp_path, data_dir)


def _upload(local, url):
  """Copies a local folder's files to gs:// (the emulator), keeping their relative paths."""
  fs, root = storage.filesystem(url)
  for path in sorted(local.rglob("*")):
    if path.is_file():
      fs.put_file(str(path), f"{root}/{path.relative_to(local).as_posix()}")
  fs.invalidate_cache()


def test_shards_in_a_bucket_read_as_local_ones(gcs, tmp_path):
  """Parquet, .jsonl.zst and an Arrow folder in a bucket, by glob: the same documents as the
  local copies, and a dataset name that depends on the files' paths under the glob's root, not
  on where a host keeps them."""
  texts = [_doc(i) for i in range(40)]
  _parquet(
    tmp_path / "c" / "fineweb" / "data" / "CC-MAIN-2024-10" / "000_00000.parquet", texts[:20]
  )
  _arrow_folder(tmp_path / "c" / "saved", texts[20:30])
  _zst(tmp_path / "c" / "dolma" / "part-0.jsonl.zst", texts[30:])
  url = gcs("corpus")
  _upload(tmp_path / "c", url)
  remote = f"{url}/fineweb/data/CC-MAIN-*/*.parquet,{url}/saved,{url}/dolma/*.jsonl.zst"
  assert _read(remote) == texts
  name = local_text.make_config(remote).name
  assert name == local_text.make_config(remote).name  # stable
  # two hosts with the corpus under different roots name it the same
  os.makedirs(tmp_path / "elsewhere")
  for shard in ("a", "b"):
    _parquet(tmp_path / "one" / f"{shard}.parquet", texts[:5])
  os.rename(tmp_path / "one", tmp_path / "elsewhere" / "one")
  here = local_text.make_config(f"{tmp_path}/elsewhere/one/*.parquet").name
  (tmp_path / "two").mkdir()
  for shard in ("a", "b"):
    src = tmp_path / "elsewhere" / "one" / f"{shard}.parquet"
    dst = tmp_path / "two" / f"{shard}.parquet"
    dst.write_bytes(src.read_bytes())
    os.utime(dst, (src.stat().st_atime, src.stat().st_mtime))
  assert local_text.make_config(f"{tmp_path}/two/*.parquet").name == here
  with pytest.raises(records.DataError, match=r"^config.data.files: no file matches"):
    local_text.expand_files(f"{url}/nothing/*.parquet")


@pytest.mark.slow
def test_the_smoke_gpt_trains_from_fineweb_and_dolma_layouts_in_a_bucket(gcs, tmp_path, data_dir):
  _public_layouts(tmp_path / "c")
  url = gcs("corpora")
  _upload(tmp_path / "c", url)
  _trained_on_both(url, tmp_path, data_dir)
