r"""Preparing a Parquet corpus shard by shard, end to end, against the tokenizer alone.

  python -m benchmarks.prepare_shards                 # 100 MB in 8 shards, FineWeb's layout
  python -m benchmarks.prepare_shards --mb=400 --shards=16

Generates a corpus in FineWeb's layout (data/CC-MAIN-*/000_00000.parquet, FineWeb's columns,
row groups of 1,000 documents of about 3 KB: blank-line blocks of CPython's sources and docs,
benchmarks/input_pipeline.corpus_blocks), then, for configs/gpt.py:small (its byte-level BPE of
50,257 trained once on the corpus's sample, not timed):

  * prepare, in this process: read + split by hash + tokenize + write, both splits, timed as
    a whole (tokenized.prepare_all, what `input_pipeline.prepare` and training run);
  * the tokenizer's own `encode_batch` on the same documents, already in memory, 8,192 at a
    time: the bound, timed in the same run;
  * `python -m input_pipeline.prepare --process_count=P --process_index=i` as P processes at
    once, for P = 1 and 2, each into a fresh tokenized_dir (the scaling over workers; a rerun
    of the finished command, which finds everything done, gives the start-up it includes).

Each shard is its own piece (data.prepare_pieces = --shards; by default pieces are about 64 MB
of files, and a small corpus is one piece), so that every worker has shards to read. Tokens are
the text's tokens (without the EOS after each document) in every row.
"""

import glob
import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
from absl import app, flags

from benchmarks import input_pipeline
from configs import gpt
from input_pipeline.corpora import local_text, sources, tokenized

_MB = flags.DEFINE_float("mb", 100, "Size of the generated corpus, in MB of text.")
_SHARDS = flags.DEFINE_integer("shards", 8, "Parquet shards it is written in.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/prepare_shards", "Where it all goes (replaced).")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_fineweb(folder, total_bytes, shards, seed=0):
  """About total_bytes of documents in `shards` Parquet files in FineWeb's layout and columns,
  two dumps; returns the glob that finds them."""
  drawn = input_pipeline.drawn_blocks(input_pipeline.corpus_blocks(), seed)
  for k in range(shards):
    texts, size = [], 0
    while size < total_bytes // shards:
      texts.append("\n\n".join(next(drawn) for _ in range(12)))
      size += len(texts[-1].encode("utf-8"))
    dump = f"CC-MAIN-2024-{10 + 8 * (k % 2)}"
    n = len(texts)
    table = pa.table(
      {
        "text": texts,
        "id": [f"<urn:uuid:{k:04d}-{i:08d}>" for i in range(n)],
        "dump": [dump] * n,
        "url": [f"https://example.org/{k}/{i}" for i in range(n)],
        "date": ["2024-02-21T00:00:00Z"] * n,
        "file_path": [f"s3://commoncrawl/crawl-data/{dump}/segments/{k}.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": [0.9] * n,
        "token_count": [len(t) // 4 for t in texts],
      }
    )
    path = os.path.join(folder, "data", dump, f"{k // 2:03d}_00000.parquet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, row_group_size=1000)
  return os.path.join(folder, "data", "CC-MAIN-*", "*.parquet")


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _workers(files, data_dir, out, count):
  """Wall seconds of `count` prepare processes started together, each worker of `count`."""
  command = [
    sys.executable,
    "-m",
    "input_pipeline.prepare",
    "--config=configs/gpt.py:small",
    f"--config.data.files={files}",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.tokenized_dir={out}",
    f"--config.data.prepare_pieces={_SHARDS.value}",
    f"--process_count={count}",
  ]
  start = time.perf_counter()
  procs = [
    subprocess.Popen([*command, f"--process_index={i}"], cwd=_REPO, stdout=subprocess.DEVNULL)
    for i in range(count)
  ]
  if any(p.wait() for p in procs):
    raise SystemExit(f"prepare with {count} workers failed")
  return time.perf_counter() - start


def _text_tokens(data, b, tok, dirs):
  splits = [tokenized.open_split(data, b, split, tok, "documents") for _, split in dirs]
  return sum(s.num_tokens - s.manifest["documents"] for s in splits)


def main(argv):
  del argv
  shutil.rmtree(_WORKDIR.value, ignore_errors=True)
  files = make_fineweb(_WORKDIR.value, int(_MB.value * 1e6), _SHARDS.value)
  size = sum(os.path.getsize(f) for f in glob.glob(files)) / 1e6
  data = gpt.get_config("small").data
  data.update(files=files, data_dir=os.path.join(_WORKDIR.value, "data"))
  data.prepare_pieces = _SHARDS.value  # one piece a shard: work for every worker
  built = sources.builders(data)
  b = built[""]
  tok, train_s = _timed(lambda: tokenized.tokenizer_for(data, built))
  texts, read_s = _timed(
    lambda: [t for s in local_text.SPLITS for t in sources.texts(b, s, data.text_key)]
  )
  mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
  reference, ref_tokens = input_pipeline.encode_batch_rate(tok, texts)
  del texts
  dirs, prepare_s = _timed(lambda: tokenized.prepare_all(data, "documents", tok, built))
  tokens = _text_tokens(data, b, tok, dirs)
  pieces = tokenized.num_pieces(data, b, "train")
  rows = [
    f"| corpus: {len(glob.glob(files))} Parquet shards, {size:.1f} MB on disk, {mb:.1f} MB of "
    f"text; {pieces} pieces | | | |",
    f"| tokenizer training (BPE 50,257, sample of 20M characters; not in the rows below) | "
    f"{train_s:.1f} s | | |",
    f"| read and split by hash alone (both splits, into memory) | {read_s:.1f} s | "
    f"{mb / read_s:.1f} MB/s | |",
    f"| `encode_batch` alone, same documents ({ref_tokens:,} tokens) | "
    f"{ref_tokens / reference:.1f} s | {reference:,.0f} tokens/s | 1.00 |",
    f"| **prepare in this process** (read + tokenize + write, {tokens:,} tokens) | "
    f"**{prepare_s:.1f} s** | {tokens / prepare_s:,.0f} tokens/s | "
    f"**{tokens / prepare_s / reference:.2f}** |",
  ]
  for count in (1, 2):
    out = os.path.join(_WORKDIR.value, f"workers-{count}")
    wall = _workers(files, data.data_dir, out, count)
    rows.append(
      f"| `input_pipeline.prepare`, {count} worker process{'es' if count > 1 else ''} | "
      f"{wall:.1f} s | {tokens / wall:,.0f} tokens/s | {tokens / wall / reference:.2f} |"
    )
  rerun = _workers(files, data.data_dir, os.path.join(_WORKDIR.value, "workers-1"), 1)
  rows.append(f"| start-up: the 1-worker command again, everything done | {rerun:.1f} s | | |")
  print(f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}")
  print("| stage | time | rate | / encode_batch |")
  print("|---|---|---|---|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
