"""nanoGPT's CPU Shakespeare recipe as our config (benchmarks/shakespeare_char.py, recipes.py)."""

import pathlib

from configs import gpt

# tinyshakespeare in ../shared/data beside the checkout (any copy can be given instead)
DEFAULT_DATA = str(
  pathlib.Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"
)


def get_config(data, data_dir, steps):
  config = gpt.get_config("nano")
  config.model.update(
    num_layers=4,
    num_heads=4,
    d_model=128,
    max_len=64,
    dropout=0.0,
    use_bias=False,
    vocab_multiple=1,
  )
  config.data.update(
    files=data, data_dir=data_dir, doc_split="file", split_by="tail", validation_fraction=0.1
  )
  config.data.tokenizer.kind = "char"
  config.batch.update(size=12, seq_len=64)
  config.optimizer.update(
    lr=1e-3,
    min_lr=1e-4,
    warmup_steps=100,
    schedule="cosine",
    b1=0.9,
    b2=0.99,
    weight_decay=0.1,
    grad_clip=1.0,
  )
  config.train.update(
    total_steps=steps, log_every=250, eval_every=500, eval_batches=0
  )  # the whole validation split
  config.checkpoint.update(every=0, async_save=True)
  return config
