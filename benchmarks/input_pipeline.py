r"""Input-pipeline throughput: tokens/s the loaders deliver on this machine, against what the
train step consumes, measured side by side in one run.

  python -m benchmarks.input_pipeline                      # corpus: the stdlib's *.py files
  python -m benchmarks.input_pipeline --train_steps=0      # loaders only

Rows:
  * GPT windows (batch 8 x 1024), from pre-tokenized data (input_pipeline/tokenized.py), with
    and without document masking, and on the fly (tokenizing the text, then packing);
  * BERT masked pairs (MLM + NSP, batch 256 x 128, dynamic masking), from pre-tokenized data
    (examples built once and cached) and on the fly (sentence splitting, tokenizing, pair
    building and masking).
Tokens are batch positions (batch x seq_len), the unit the train step's tokens/s counts. Each
loader runs in this one process; the tokenizers' Rust code uses both cores. The train-step
rows are GPT-2 small at 8 x 256 and BERT-base at 8 x 128 (benchmarks/throughput.py).
"""
import glob
import os
import time

import numpy as np
from absl import app, flags

from configs import bert, common
from input_pipeline import bert_data, lm_data, masking, sources, tokenized, tokenizer

_DATA_DIR = flags.DEFINE_string("data_dir", "data", "tfds data_dir (tokenizers, tokenized data).")
_FILES = flags.DEFINE_string(
    "files", os.path.join(os.path.dirname(os.__file__), "*.py"), "Corpus (paths or globs).")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Time each loader at least this long.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3, "Timed train steps (0: skip).")


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
        windows.batch, 8 * 1024)

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
    docs = [d for d in tokenized.tokenize_documents(tok, texts) if d]
    examples, _ = bert_data._build_examples(docs, data, 128, np.random.default_rng(0), ids)  # pylint: disable=protected-access
    masked = bert_data.MaskedExamples.from_examples(
        examples, seq_len=128, pad_id=ids["[PAD]"], batch_size=len(examples), seed=[0, 0],
        shuffle=True, spec=spec, nsp=True)
    return masked.batch(0)

  n = on_the_fly(0)["inputs"].size
  rows["BERT masked pairs, on the fly (split + tokenize + pair + mask)"] = _rate(on_the_fly, n)
  return rows, (f"{loader.num_examples:,} pairs of 128 (WordPiece 30522), prepared and "
                f"paired in {prep:.1f} s")


def main(argv):
  del argv
  files = sum(len(glob.glob(p)) for p in _FILES.value.split(","))
  print(f"corpus: {files} files ({_FILES.value}); {os.cpu_count()} CPU cores")
  gpt, gpt_note = gpt_rows()
  bert_, bert_note = bert_rows()
  print(f"GPT: {gpt_note}\nBERT: {bert_note}")
  train = {}
  if _TRAIN_STEPS.value:
    from benchmarks import throughput  # pylint: disable=g-import-not-at-top
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
