r"""GPT-style decoder pretraining (causal LM).

Sizes (models/decoder.py SIZES): smoke, nano, small (124M), medium (350M), large (774M), xl (1.5B).

  python -m pretrain.train --config=configs/gpt.py:smoke --workdir=runs/gpt
  python -m pretrain.train --config=configs/gpt.py:small --workdir=runs/gpt2 \
      --config.data.dataset=lm1b --config.data.eval_split=test --config.model.dtype=bfloat16

Any field can be overridden with --config.<section>.<field>=<value>. A mixture of datasets is
declared in config.data.mixture; `mix=docs_code` is a runnable example (offline): 70% CPython's
documentation topics, 30% Python source from the standard library.

  python -m pretrain.train --config=configs/gpt.py:smoke,mix=docs_code --workdir=runs/mix

Sweeps (launch/sweep.py) are the sweep_* functions at the end of this file:

  python -m launch.sweep --config=configs/gpt.py:smoke --sweep=lr --sweepdir=runs/sweeps/lr --parallel=2
  python -m launch.sweep --config=configs/gpt.py:nano --sweep=tpe --sweepdir=runs/sweeps/tpe --trials=32
"""

import os

from configs import common, sweeps
from models import decoder


def get_config(arg="smoke"):
  args = common.parse_arg(arg, size="smoke", mix="")
  config = common.base_config()
  config.model = common.model_config(decoder, args.size)
  config.objective = "causal_lm"

  if args.size == "smoke":  # seconds on a laptop CPU, on the bundled corpus
    # Paragraphs as documents and 10% of them held out: ~20K validation tokens, so that the
    # evaluation is not a handful of topics (5% of the 79 topic files is 4 documents).
    config.data.update(doc_split="blank_line", validation_fraction=0.1)
    config.data.tokenizer.vocab_size = 512
    config.batch.size = 8
    config.batch.seq_len = 64
    config.optimizer.lr = 3e-3
    config.optimizer.min_lr = 3e-4
    config.optimizer.warmup_steps = 10
    config.optimizer.weight_decay = 0.0
    config.train.total_steps = 200
    config.train.log_every = 20
    config.train.eval_every = 100
    config.train.eval_batches = 4
    config.checkpoint.every = 100
  elif args.size == "nano":  # nanoGPT's shakespeare_char-sized model
    config.data.tokenizer.vocab_size = 4096
    config.batch.size = 64
    config.batch.seq_len = 256
    config.optimizer.lr = 1e-3
    config.optimizer.min_lr = 1e-4
    config.optimizer.b2 = 0.99
    config.train.total_steps = 5000
    config.train.eval_every = 250
  else:  # the GPT-2 recipe: 0.5M-token batches, 6e-4 peak lr, 2000 warmup steps
    config.data.tokenizer.vocab_size = 50257
    config.batch.size = 512
    config.batch.seq_len = 1024
    config.optimizer.warmup_steps = 2000
    config.train.total_steps = 600_000
    config.train.eval_every = 1000
    config.train.eval_batches = 50
    config.checkpoint.every = 1000
  if args.mix == "docs_code":
    stdlib = os.path.dirname(os.__file__)
    config.data.mixture.docs = common.mixture_source(0.7)  # the default corpus
    config.data.mixture.code = common.mixture_source(
      0.3,
      files=",".join(os.path.join(stdlib, m, "*.py") for m in ("json", "email", "http")),
      split_by="tail",
    )  # few files: hold out their last 5% rather than whole files
  elif args.mix:
    raise ValueError(f"config arg mix={args.mix!r}: the example mixture is 'docs_code'")
  return config


def sweep_lr():
  """The peak learning rate: a 4-trial grid (about a minute on the smoke config)."""
  return sweeps.grid({"optimizer.lr": [1e-3, 3e-3, 1e-2, 3e-2]})


def sweep_random():
  """Random search over the learning rate (log-uniform), its warmup and the weight decay."""
  return sweeps.random(
    {
      "optimizer.lr": sweeps.log_uniform(3e-4, 3e-2),
      "optimizer.warmup_steps": [10, 50, 100],
      "optimizer.weight_decay": sweeps.uniform(0.0, 0.2),
    },
    trials=16,
  )


def sweep_tpe():
  """Adaptive (TPE): the learning rate with its floor at a tenth of it, warmup and dropout;
  trials behind the median at an evaluation are stopped."""

  def suggest(trial):
    lr = trial.suggest_float("optimizer.lr", 1e-4, 3e-2, log=True)
    return {
      "optimizer.lr": lr,
      "optimizer.min_lr": lr / 10,
      "optimizer.warmup_steps": trial.suggest_int("optimizer.warmup_steps", 10, 500, log=True),
      "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.2),
    }

  return sweeps.tpe(suggest, trials=32, pruner="median")
