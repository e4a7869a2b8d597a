"""Record shards as corpora (input_pipeline/corpora/records.py): Parquet by row group, Arrow
dataset folders and .jsonl.zst, prepared through the local-text builder, and their bad inputs."""

import json
import os

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from configs import common
from input_pipeline.corpora import local_text, records, sources
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


@pytest.mark.slow
def test_the_smoke_gpt_trains_on_a_fineweb_layout_corpus(tmp_path, data_dir):
  for shard in range(2):
    texts = [_doc(100 * shard + i) + " " + _doc(i) * 3 for i in range(100)]
    _parquet(
      tmp_path / "fineweb" / "data" / f"CC-MAIN-2024-1{shard}" / "000_00000.parquet", texts, 25
    )
  files = f"{tmp_path}/fineweb/data/CC-MAIN-*/*.parquet"
  config = helpers.tiny_gpt_config(data_dir, **{"data.files": files, "checkpoint.every": 0})
  result = trainer.train_and_evaluate(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  rows = [r for r in metrics.read_rows(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
  assert result.step == 6 and np.isfinite(rows[-1]["train/loss"])


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
def test_the_smoke_gpt_trains_from_a_fineweb_layout_bucket(gcs, tmp_path, data_dir):
  for shard in range(2):
    texts = [_doc(100 * shard + i) + " " + _doc(i) * 3 for i in range(100)]
    _parquet(tmp_path / "c" / "data" / f"CC-MAIN-2024-1{shard}" / "000_00000.parquet", texts, 25)
  url = gcs("fineweb")
  _upload(tmp_path / "c", url)
  files = f"{url}/data/CC-MAIN-*/*.parquet"
  config = helpers.tiny_gpt_config(data_dir, **{"data.files": files, "checkpoint.every": 0})
  result = trainer.train_and_evaluate(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert result.step == 6
