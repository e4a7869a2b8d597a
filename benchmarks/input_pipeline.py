r"""Input-pipeline throughput: tokens/s the loaders deliver on this machine, against what the
train step consumes, measured side by side in one run; and the data preparation end to end.

  python -m benchmarks.input_pipeline                      # corpus: the stdlib's *.py files
  python -m benchmarks.input_pipeline --train_steps=0      # loaders only
  python -m benchmarks.input_pipeline --only_prepare       # the prepare rows only (100 MB)

Rows:
  * GPT windows (batch 8 x 1024), from pre-tokenized data (input_pipeline/corpora/tokenized.py), with
    and without document masking, and on the fly (tokenizing the text, then packing);
  * BERT masked pairs (MLM + NSP, batch 256 x 128, dynamic masking), from pre-tokenized data
    (examples built once and cached) and on the fly (sentence splitting, tokenizing, pair
    building and masking).
Tokens are batch positions (batch x seq_len), the unit the train step's tokens/s counts. Each
loader runs in this one process; the tokenizers' Rust code uses both cores. The train-step
rows are GPT-2 small at 8 x 256 and BERT-base at 8 x 128 (benchmarks/throughput.py).

Prepare rows: what `python -m input_pipeline.prepare` does for configs/gpt.py:small and
configs/bert.py:base, stage by stage, in a fresh data_dir each, on a corpus generated into a
temporary directory (--prepare_mb of text in 10 files, make_corpus): the corpus check (files
split by hash get no tfds copy), the tokenizer's training on its sample
(config.data.tokenizer.max_train_chars), the tokenization of both splits (and BERT's pairs). The tokenization's tokens/s is set against the tokenizer's
own `encode_batch` on the same documents, timed in the same run.
"""

import glob
import os
import random
import tempfile
import time

import numpy as np
from absl import app, flags

from configs import bert, common, gpt
from input_pipeline import bert_data, lm_data, masking, tokenizer
from input_pipeline.corpora import sources, tokenized

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "tfds data_dir (tokenizers, tokenized data).")
_FILES = flags.DEFINE_string(
  "files", os.path.join(os.path.dirname(os.__file__), "*.py"), "Corpus (paths or globs)."
)
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Time each loader at least this long.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3, "Timed train steps (0: skip).")
_PREPARE_MB = flags.DEFINE_float(
  "prepare_mb", 100, "Prepare rows on a generated corpus of this many MB (0: skip them)."
)
_ONLY_PREPARE = flags.DEFINE_bool("only_prepare", False, "Only the prepare rows.")


def _rate(fn, tokens_per_call):
  """Tokens/s of fn(i), called for at least --seconds (and 3 times) after one warm-up call."""
  fn(0)
  calls, start = 0, time.perf_counter()
  while calls < 3 or time.perf_counter() - start < _SECONDS.value:
    fn(calls + 1)
    calls += 1
  return tokens_per_call * calls / (time.perf_counter() - start)


def _data(kind, vocab_size, eos):
  data = common.data_config()
  data.update(data_dir=_DATA_DIR.value, files=_FILES.value)
  data.tokenizer.update(kind=kind, vocab_size=vocab_size, eos_token=eos)
  return data


def gpt_rows():
  data = _data("bpe", 8192, "<|endoftext|>")
  built = sources.builders(data)
  b, tok = built[""], tokenized.tokenizer_for(data, built)
  eos = tok.token_to_id(data.tokenizer.eos_token)
  start = time.perf_counter()
  tokenized.prepare(data, b, "train", tok, "documents")
  prep = time.perf_counter() - start
  split = tokenized.open_split(data, b, "train", tok, "documents")
  texts = list(sources.texts(b, "train", "text"))
  rows = {}
  for mask in (False, True):
    windows = lm_data.PackedWindows(split.stream, 1024, 8, [0, 0], True, mask, eos)
    rows[f"GPT windows 8 x 1024, pre-tokenized{', document mask' if mask else ''}"] = _rate(
      windows.batch, 8 * 1024
    )

  def on_the_fly(_):
    tokens, _ = lm_data.tokenize_stream(tok, texts, eos)
    lm_data.PackedWindows(tokens, 1024, 8, [0, 0], True, False, eos).batch(0)
    return tokens

  n = len(on_the_fly(0))
  rows["GPT windows, on the fly (tokenize + pack)"] = _rate(on_the_fly, n)
  return rows, f"{split.num_tokens:,} train tokens (BPE 8192), prepared in {prep:.1f} s"


def bert_rows():
  config = bert.get_config("base")
  data = _data("wordpiece", 30522, "[SEP]")
  data.mlm = config.data.mlm
  built = sources.builders(data)
  b, tok = built[""], tokenized.tokenizer_for(data, built)
  start = time.perf_counter()
  tokenized.prepare(data, b, "train", tok, "sentences")
  split = tokenized.open_split(data, b, "train", tok, "sentences")
  bert_data.build_examples(split, data, tok, seq_len=128, seed=[0, 0])
  loader = bert_data.load(split, data, tok, batch_size=256, seq_len=128, seed=[0, 0], shuffle=True)
  prep = time.perf_counter() - start
  rows = {"BERT masked pairs 256 x 128, pre-tokenized": _rate(loader.batch, 256 * 128)}

  texts = list(sources.texts(b, "train", "text"))
  ids = tokenizer.check_bert_specials(tok)
  spec = masking.make_spec(tok, [ids[t] for t in tokenizer.BERT_SPECIALS], ids["[MASK]"], data.mlm)

  def on_the_fly(_):
    sents = bert_data.Sentences.from_lengths(*tokenized.encode_sentences(tok, texts))
    build = bert_data._build_examples
    arrays, _ = build(sents, data, 128, np.random.default_rng(0), ids)
    masked = bert_data.MaskedExamples(
      dict(arrays, tokens=bert_data.PieceRows([arrays["tokens"]])),
      batch_size=len(arrays["lengths"]),
      seed=[0, 0],
      shuffle=True,
      spec=spec,
      nsp=True,
    )
    return masked.batch(0)

  n = on_the_fly(0)["inputs"].size
  rows["BERT masked pairs, on the fly (split + tokenize + pair + mask)"] = _rate(on_the_fly, n)
  return rows, (
    f"{loader.num_examples:,} pairs of 128 (WordPiece 30522), prepared and paired in {prep:.1f} s"
  )


def corpus_blocks():
  """The blank-line blocks of the standard library's Python sources and of CPython's
  documentation topics: the same text on the same Python install."""
  root = os.path.dirname(os.__file__)
  paths = sorted(
    p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True) if "-packages" not in p
  )
  blocks = []
  for path in paths:
    with open(path, "rb") as f:
      text = f.read().decode("utf-8", "replace").replace("\0", "").replace("\r\n", "\n")
    blocks.extend(b for b in text.split("\n\n") if b.strip())
  import pydoc_data.topics

  for _, text in sorted(pydoc_data.topics.topics.items()):
    blocks.extend(b for b in text.split("\n\n") if b.strip())
  return blocks


def drawn_blocks(blocks, seed=0):
  """`blocks` without end, in seeded random order, each once before any repeats."""
  rng = random.Random(seed)
  while True:
    order = list(range(len(blocks)))
    rng.shuffle(order)
    yield from (blocks[i] for i in reversed(order))


def make_corpus(folder, total_bytes, num_files=10, seed=0):
  """About total_bytes of text in num_files files under `folder`: corpus_blocks drawn in seeded
  random order, blank lines between them. Returns the file glob."""
  drawn = drawn_blocks(corpus_blocks(), seed)
  for k in range(num_files):
    parts, size = [], 0
    while size < total_bytes // num_files:
      parts.append(next(drawn))
      size += len(parts[-1].encode("utf-8")) + 2
    with open(os.path.join(folder, f"part-{k:02d}.txt"), "w", encoding="utf-8") as f:
      f.write("\n\n".join(parts))
  return os.path.join(folder, "*.txt")


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def encode_batch_rate(tok, texts, chunk=8192):
  """(tokens/s, tokens) of the tokenizer's own encode_batch over `texts`, `chunk` at a time."""
  tokens, start = 0, time.perf_counter()
  for i in range(0, len(texts), chunk):
    tokens += sum(map(len, tok.encode_batch(texts[i : i + chunk], add_special_tokens=False)))
  return tokens / (time.perf_counter() - start), tokens


def prepare_rows(name, config, files, data_dir):
  """The stages of preparing config's data from scratch in data_dir: (markdown rows, totals)."""
  data = config.data
  data.update(files=files, doc_split="blank_line", data_dir=data_dir)
  mode = tokenized.mode_for(data)
  built, build_s = _timed(lambda: sources.builders(data))
  b = built[""]
  tok, train_s = _timed(lambda: tokenized.tokenizer_for(data, built))
  dirs, tokenize_s = _timed(lambda: tokenized.prepare_all(data, mode, tok, built))
  splits = [tokenized.open_split(data, b, split, tok, mode) for _, split in dirs]
  tokens = sum(s.num_tokens for s in splits)
  docs = sum(s.manifest["documents"] for s in splits)
  text_tokens = tokens - (docs if mode == "documents" else 0)  # without the EOS after each
  examples_s = 0.0
  if mode == "sentences":
    _, examples_s = _timed(
      lambda: [
        bert_data.build_examples(s, data, tok, seq_len=config.batch.seq_len, seed=[config.seed, 0])
        for s in splits
      ]
    )
    examples = sum(
      len(
        bert_data.open_examples(s, data, seq_len=config.batch.seq_len, seed=[config.seed, 0])[
          "lengths"
        ]
      )
      for s in splits
    )
  texts = [t for _, split in dirs for t in sources.texts(b, split, data.text_key)]
  mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
  batched, batched_s = _timed(
    lambda: sum(map(len, sources.text_batches(b, data.train_split, data.text_key)))
  )
  reference, ref_tokens = encode_batch_rate(tok, texts)
  rate = text_tokens / tokenize_s
  total = build_s + train_s + tokenize_s + examples_s
  sample = data.tokenizer.max_train_chars / 1e6
  rows = [
    f"| {name}: check the corpus (no tfds copy: files split by hash are read as they are "
    f"tokenized; {len(texts):,} documents, {mb:.1f} MB) | {build_s:.1f} s | | |",
    f"| {name}: read and split by hash, in batches of {sources.READ_BATCH} | | "
    f"{batched / batched_s:,.0f} documents/s | |",
    f"| {name}: tokenizer training ({data.tokenizer.kind} {data.tokenizer.vocab_size}, sample of "
    f"{sample:g}M characters) | {train_s:.1f} s | | |",
    f"| {name}: tokenization ({tokens:,} tokens) | {tokenize_s:.1f} s | {rate:,.0f} tokens/s "
    f"| **{rate / reference:.2f}** |",
    f"| {name}: `encode_batch` alone, same documents ({ref_tokens:,} tokens) | "
    f"{ref_tokens / reference:.1f} s | {reference:,.0f} tokens/s | 1.00 |",
  ]
  if mode == "sentences":
    rows.append(
      f"| {name}: NSP pairs ({examples:,} of {config.batch.seq_len}) | "
      f"{examples_s:.1f} s | {tokens / examples_s:,.0f} tokens/s | |"
    )
  rows.append(
    f"| {name}: **whole prepare** | **{total:.1f} s** | {tokens / total:,.0f} tokens/s | |"
  )
  return rows


def prepare_table():
  print(
    f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}, "
    f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', '(unset)')}"
  )
  with tempfile.TemporaryDirectory() as tmp:
    corpus = os.path.join(tmp, "corpus")
    os.makedirs(corpus)
    files = make_corpus(corpus, int(_PREPARE_MB.value * 1e6))
    size = sum(os.path.getsize(f) for f in glob.glob(files)) / 1e6
    print(f"prepare: generated {size:.1f} MB in 10 files")
    rows = prepare_rows("GPT-2 small", gpt.get_config("small"), files, os.path.join(tmp, "gpt"))
    rows += prepare_rows("BERT-base", bert.get_config("base"), files, os.path.join(tmp, "bert"))
  print("| stage | time | rate | / encode_batch |")
  print("|---|---|---|---|")
  print("\n".join(rows))


def main(argv):
  del argv
  if _PREPARE_MB.value:
    prepare_table()
  if _ONLY_PREPARE.value:
    return
  files = sum(len(glob.glob(p)) for p in _FILES.value.split(","))
  print(f"corpus: {files} files ({_FILES.value}); {os.cpu_count()} CPU cores")
  gpt, gpt_note = gpt_rows()
  bert_, bert_note = bert_rows()
  print(f"GPT: {gpt_note}\nBERT: {bert_note}")
  train = {}
  if _TRAIN_STEPS.value:
    from benchmarks import throughput

    for name in ("gpt2_small_256", "bert_base_128"):
      train[name] = throughput.bench(name, _TRAIN_STEPS.value, "float32")["tokens_per_s"]
      print(f"train step {name}: {train[name]:,.0f} tokens/s")
  print("| loader | tokens/s | / train step consumption |")
  print("|---|---|---|")
  for rows, step in ((gpt, "gpt2_small_256"), (bert_, "bert_base_128")):
    for name, rate in rows.items():
      ratio = f"{rate / train[step]:,.0f}x ({step})" if step in train else "-"
      print(f"| {name} | {rate:,.0f} | {ratio} |")


if __name__ == "__main__":
  app.run(main)
