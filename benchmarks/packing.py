r"""Pad tokens and real tokens per second: encoder pretraining rows padded (BERT's sentence
pairs) against packed (RoBERTa's full sentences; ModernBERT's, documents kept apart), and
SST-2 fine-tuning one sentence a row against packed several a row (data.pack_examples).

  JAX_PLATFORMS=cpu python -m benchmarks.packing --workdir=/tmp/packing

Pretraining: each recipe's `tiny` size (configs/bert.py:tiny,recipe=R,seq=128) on the bundled
corpus (paragraphs as documents), --steps steps of 32 rows, one device. The pad fraction is
counted over the rows of the first 20 batches (input_mask); real tokens per second is the
run's median tokens per second (every position) times the share that is not padding.
SST-2 (GLUE's train.tsv and dev.tsv in ../shared/data/sst2; skipped when absent): BERT-tiny
from scratch (configs/finetune/glue.py:sst2,size=tiny,seq=64, a WordPiece of 8192 trained on the
task's text, lr 1e-4), one epoch of the 67,349 sentences, padded at batch 32 against packed at
batch 8 rows (about as many sentences a step); pad share, tokens per second (every position,
and real ones) and the dev accuracy after the epoch.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import pathlib
import statistics

import jax
import numpy as np
from absl import app, flags

from configs import bert
from configs.finetune import glue
from input_pipeline import masking
from pretrain.training import trainer

_REPO = pathlib.Path(__file__).resolve().parents[1]
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/packing", "Where the runs go (replaced).")
_STEPS = flags.DEFINE_integer("steps", 80, "Train steps of each pretraining run.")
_ONLY_SST2 = flags.DEFINE_bool("only_sst2", False, "Only the SST-2 fine-tuning rows.")
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


def _median_rate(run_dir):
  """The run's median tokens per second (every position), its first log left out."""
  with open(f"{run_dir}/metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return statistics.median([r["train/tokens_per_s"] for r in rows if "train/tokens_per_s" in r][1:])


def pretraining(recipe, workdir):
  config = _config(recipe, workdir)
  pad = _pad_fraction(config)
  trainer.train_and_evaluate(config, f"{workdir}/{recipe}", devices=jax.devices()[:1])
  rate = _median_rate(f"{workdir}/{recipe}")
  return dict(recipe=recipe, pad=pad, tokens_per_s=rate, real_tokens_per_s=rate * (1 - pad))


def _sst2_config(workdir, packed):
  config = glue.get_config("sst2,size=tiny,seq=64")
  train, dev = (os.path.join(_SST2.value, f) for f in ("train.tsv", "dev.tsv"))
  config.data.update(files=f"{train},{dev}", data_dir=f"{workdir}/data", pack_examples=packed)
  config.data.tokenizer.vocab_size = 8192
  config.batch.size = 8 if packed else 32
  config.optimizer.lr = 1e-4
  config.train.update(epochs=1.0, log_every=50)
  return config


def sst2_finetuning(workdir, packed):
  """One epoch of SST-2 fine-tuning, one sentence a row or packed."""
  config = _sst2_config(workdir, packed)
  name = "packed" if packed else "padded"
  pad = _pad_fraction(config)
  result = trainer.train_and_evaluate(config, f"{workdir}/sst2-{name}", devices=jax.devices()[:1])
  rate = _median_rate(f"{workdir}/sst2-{name}")
  return dict(
    rows=name,
    batch=config.batch.size,
    steps=result.step,
    pad=pad,
    tokens_per_s=rate,
    real_tokens_per_s=rate * (1 - pad),
    accuracy=result.metrics["eval_accuracy"],
  )


def main(argv):
  del argv
  workdir = _WORKDIR.value
  recipes = () if _ONLY_SST2.value else ("bert", "roberta", "modern")
  results = [pretraining(r, workdir) for r in recipes]
  for r in results:
    print(
      f"{r['recipe']:8s} pad {r['pad']:.3f}  tokens/s {r['tokens_per_s']:,.0f}  "
      f"real tokens/s {r['real_tokens_per_s']:,.0f}"
    )
  if os.path.isfile(os.path.join(_SST2.value, "train.tsv")):
    for r in (sst2_finetuning(workdir, p) for p in (False, True)):
      print(
        f"SST-2 {r['rows']}: batch {r['batch']}, {r['steps']} steps, pad {r['pad']:.3f}, "
        f"tokens/s {r['tokens_per_s']:,.0f}, real tokens/s {r['real_tokens_per_s']:,.0f}, "
        f"dev accuracy {r['accuracy']:.4f}"
      )


if __name__ == "__main__":
  app.run(main)
