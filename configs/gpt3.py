r"""GPT-3 (Brown et al. 2020): the family's sizes (Table 2.1) and its training recipe.

Sizes: small (125M), medium (350M), large (760M), xl (1.3B), 2.7b, 6.7b, 13b, 175b; and smoke,
the recipe on the smoke-sized model and the bundled corpus (seconds on a CPU).

  python -m pretrain.train --config=configs/gpt3.py:smoke --workdir=runs/gpt3-smoke
  python -m pretrain.aot --config=configs/gpt3.py:175b --target=v5p-1024   # docs/scale.md

The recipe (Section 2.3 and Appendix B): Adam with b1 0.9, b2 0.95, eps 1e-8; gradient clipping
at 1.0; weight decay 0.1; a linear warmup over the first 375M tokens; cosine decay to 10% of the
peak over 260B tokens, then 10%; 300B tokens in all; the batch grown linearly from 32k tokens to
the full batch over the first 4-12B tokens (the paper gives the range, not each size's: 4B up to
1.3B, 8B up to 6.7B, 12B above).

Attention is dense in every layer by default. The paper alternates dense and locally banded
sparse layers, "similar to the Sparse Transformer", without giving the band's width:
`,banded=W` makes every other layer (1, 3, 5, ...) attend to the last W positions only
(model.attention_window=W, model.global_every=2), e.g. configs/gpt3.py:175b,banded=256.
"""

import math

from configs import common
from models import decoder

SEQ_LEN = 2048
TOKENS = 300e9  # the run
DECAY_TOKENS = 260e9  # the cosine's length
WARMUP_TOKENS = 375e6  # the learning rate's
RAMP_START = 16  # sequences: the batch ramp's start, 32k tokens

# size: (sequences per batch, peak lr, tokens over which the batch grows). Batches of 0.5M,
# 1M and 2M tokens are 2^19, 2^20 and 2^21 tokens; 175B's 3.2M is 1536 sequences (3.1M
# tokens), as MaxText's gpt3-175b has it.
RECIPES = {
  "small": (256, 6e-4, 4e9),
  "medium": (256, 3e-4, 4e9),
  "large": (256, 2.5e-4, 4e9),
  "xl": (512, 2e-4, 4e9),
  "2.7b": (512, 1.6e-4, 8e9),
  "6.7b": (1024, 1.2e-4, 8e9),
  "13b": (1024, 1e-4, 12e9),
  "175b": (1536, 0.6e-4, 12e9),
}


def get_config(arg="small"):
  args = common.parse_arg(arg, size="small", banded=0)
  if args.size != "smoke" and args.size not in RECIPES:
    raise ValueError(
      f"config arg: unknown size {args.size!r}; choose one of smoke, {', '.join(RECIPES)}"
    )
  config = common.base_config()
  config.objective = "causal_lm"
  if args.size == "smoke":
    config.model = common.model_config(decoder, "smoke")
    config.data.update(doc_split="blank_line", validation_fraction=0.1)
    config.data.tokenizer.vocab_size = 512
    _recipe(config, 32, 64, 3e-3, tokens=2048 * 200, ramp_tokens=2048 * 40, warmup_tokens=2048 * 10)
    config.train.update(log_every=20, eval_every=100, eval_batches=4)
    config.checkpoint.every = 100
    return _banded(config, args.banded)
  sequences, lr, ramp_tokens = RECIPES[args.size]
  config.model = common.model_config(decoder, f"gpt3_{args.size}")
  config.data.tokenizer.vocab_size = 50257  # GPT-2's BPE; vocab_multiple 128 pads it to 50304
  _recipe(config, sequences, SEQ_LEN, lr, TOKENS, ramp_tokens, WARMUP_TOKENS)
  config.train.update(eval_every=1000, eval_batches=50)
  config.checkpoint.every = 1000
  return _banded(config, args.banded)


def _banded(config, window):
  """GPT-3's alternating dense and banded layers: odd layers attend to the last `window`."""
  if window:
    config.model.update(attention_window=window, global_every=2)
  return config


def _recipe(config, sequences, seq_len, lr, tokens, ramp_tokens, warmup_tokens):
  """GPT-3's optimizer, schedule and batch ramp for a batch of `sequences` x `seq_len`."""
  batch_tokens = sequences * seq_len
  config.batch.update(size=sequences, seq_len=seq_len)
  # The ramp grows the batch by whole microbatches: a microbatch of RAMP_START sequences starts
  # it at 32k tokens. On a pod, a microbatch must span the data-parallel devices: a larger one
  # (--config.batch.grad_accum=N) starts the ramp at one microbatch instead.
  config.batch.grad_accum = max(1, sequences // RAMP_START)
  config.batch.warmup_start = RAMP_START
  # steps over which the ramp, growing linearly, has taken `ramp_tokens`
  config.batch.warmup_steps = math.ceil(2 * ramp_tokens / ((RAMP_START + sequences) * seq_len))
  config.optimizer.update(
    name="adamw", lr=lr, min_lr=lr / 10, b1=0.9, b2=0.95, eps=1e-8, grad_clip=1.0
  )
  config.optimizer.update(weight_decay=0.1, schedule="cosine", decay_until=DECAY_TOKENS / TOKENS)
  config.optimizer.warmup_steps = math.ceil(warmup_tokens / batch_tokens)
  config.train.update(total_steps=0, total_tokens=int(tokens))
