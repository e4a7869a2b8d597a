r"""Pad tokens and real tokens per second: encoder pretraining rows padded (BERT's sentence
pairs) against packed (RoBERTa's full sentences; ModernBERT's, documents kept apart), and
SST-2's fine-tuning rows, which are padded one sentence a row.

  JAX_PLATFORMS=cpu python -m benchmarks.packing --workdir=/tmp/packing

Pretraining: each recipe's `tiny` size (configs/bert.py:tiny,recipe=R,seq=128) on the bundled
corpus (paragraphs as documents), --steps steps of 32 rows, one device. The pad fraction is
counted over the rows of the first 20 batches (input_mask); real tokens per second is the
run's median tokens per second (every position) times the share that is not padding.
SST-2: GLUE's train.tsv sentences (../shared/data/sst2, skipped when absent) in a WordPiece of
8192 trained on them, one [CLS] sentence [SEP] a row at seq 64 and 128.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import csv
import json
import pathlib
import statistics

import jax
import numpy as np
from absl import app, flags

from configs import bert
from input_pipeline import masking, tokenizer
from pretrain.training import trainer

_REPO = pathlib.Path(__file__).resolve().parents[1]
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/packing", "Where the runs go (replaced).")
_STEPS = flags.DEFINE_integer("steps", 80, "Train steps of each pretraining run.")
_SST2 = flags.DEFINE_string("sst2_dir", str(_REPO.parent / "shared/data/sst2"), "GLUE SST-2.")


def _config(recipe, workdir):
  config = bert.get_config(f"tiny,recipe={recipe},seq=128")
  config.data.update(doc_split="blank_line", validation_fraction=0.1, data_dir=f"{workdir}/data")
  config.data.tokenizer.vocab_size = 8192
  config.batch.update(size=32, seq_len=128, grad_accum=1, warmup_steps=0)
  config.model.max_len = max(config.model.max_len, 128)
  need = masking.required_predictions(128, config.data.mlm.mask_prob)
  config.data.mlm.max_predictions = need  # the same for bert and roberta (15%)
  config.optimizer.update(lr=1e-3, warmup_steps=10)
  config.train.update(total_tokens=0, total_steps=_STEPS.value, log_every=10, eval_every=0)
  config.train.eval_batches = 1
  config.checkpoint.every = 0
  return config


def _pad_fraction(config):
  run = trainer.setup(config, jax.devices()[:1])
  masks = [run.train_data.batch(i, run.rows)["input_mask"] for i in range(20)]
  return 1.0 - float(np.mean(masks))


def pretraining(recipe, workdir):
  config = _config(recipe, workdir)
  pad = _pad_fraction(config)
  trainer.train_and_evaluate(config, f"{workdir}/{recipe}", devices=jax.devices()[:1])
  with open(f"{workdir}/{recipe}/metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  rates = [r["train/tokens_per_s"] for r in rows if "train/tokens_per_s" in r][1:]
  rate = statistics.median(rates)
  return dict(recipe=recipe, pad=pad, tokens_per_s=rate, real_tokens_per_s=rate * (1 - pad))


def sst2(seq_lens=(64, 128)):
  path = os.path.join(_SST2.value, "train.tsv")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    sentences = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
  tok = tokenizer._train_wordpiece(sentences, 8192, True)
  lengths = np.array([len(e.ids) for e in tok.encode_batch(sentences)])  # with [CLS], [SEP]
  out = []
  for seq in seq_lens:
    kept = np.minimum(lengths, seq)
    out.append(
      dict(seq=seq, mean_tokens=float(lengths.mean()), pad=1 - kept.sum() / (seq * len(kept)))
    )
  return out


def main(argv):
  del argv
  workdir = _WORKDIR.value
  results = [pretraining(r, workdir) for r in ("bert", "roberta", "modern")]
  for r in results:
    print(
      f"{r['recipe']:8s} pad {r['pad']:.3f}  tokens/s {r['tokens_per_s']:,.0f}  "
      f"real tokens/s {r['real_tokens_per_s']:,.0f}"
    )
  for r in sst2():
    print(f"SST-2 seq {r['seq']}: {r['mean_tokens']:.1f} tokens a sentence, pad {r['pad']:.3f}")


if __name__ == "__main__":
  app.run(main)
