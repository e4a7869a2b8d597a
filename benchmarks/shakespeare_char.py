r"""Reproduces nanoGPT's CPU Shakespeare recipe with our trainer and reports the validation loss.

  python -m benchmarks.shakespeare_char --workdir=/tmp/shakespeare_char [--data=input.txt]

The data is tinyshakespeare (char-rnn's corpus, 1,115,394 characters): by default the copy in
../shared/data/tinyshakespeare/input.txt beside the checkout, or any copy given as --data,
e.g. from https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt

nanoGPT (README, "I only have a macbook"): train.py config/train_shakespeare_char.py
--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0,
which reaches a validation loss of 1.88. Same data split (first 90% of the characters train,
last 10% validation), same model, lr 1e-3 with 100 warmup steps and cosine decay to 1e-4,
beta2 0.99, weight decay 0.1, grad clip 1.0, no biases. Our validation loss is measured on the
whole validation split instead of 20 random batches.
"""

import json
import os
import time

from absl import app, flags

from benchmarks import shakespeare_config
from pretrain.devices import host_memory
from pretrain.training import trainer

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/shakespeare_char", "Run directory (wiped).")
_DATA = flags.DEFINE_string("data", shakespeare_config.DEFAULT_DATA, "tinyshakespeare input.txt")
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps.")


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  if not os.path.exists(_DATA.value):
    raise app.UsageError(f"--data: {_DATA.value} not found (tinyshakespeare input.txt)")
  import shutil

  shutil.rmtree(_WORKDIR.value, ignore_errors=True)
  config = shakespeare_config.get_config(
    _DATA.value, os.path.join(_WORKDIR.value, "data"), _STEPS.value
  )
  start = time.perf_counter()
  result = trainer.train_and_evaluate(config, os.path.join(_WORKDIR.value, "run"))
  wall = time.perf_counter() - start
  summary = {
    "val_loss": result.metrics["eval_loss"],
    "nanogpt_val_loss": 1.88,
    "steps": result.step,
    "wall_s": round(wall, 1),
    "train_tokens_per_s": round(result.metrics["tokens_per_s"]),
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
