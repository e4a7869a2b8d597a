r"""BERT-style encoder pretraining: masked LM + next-sentence prediction, or the RoBERTa recipe.

Sizes (models/encoder.py SIZES): smoke, tiny, mini, small, medium, base (110M), large (340M).
Recipes:
  bert     MLM + NSP on sentence pairs built as in the original create_pretraining_data.
           Phase 1 at seq 128 (90% of the steps), then phase 2 at seq 512 from phase 1:
             python -m pretrain.train --config=configs/bert.py:base --workdir=RUN128
             python -m pretrain.train --config=configs/bert.py:base,seq=512 --workdir=RUN512 \
                 --config.init_from=RUN128
  roberta  MLM only, FULL-SENTENCES packing across documents, dynamic masking, no NSP:
             python -m pretrain.train --config=configs/bert.py:base,recipe=roberta --workdir=RUN
  modern   ModernBERT (Warner et al. 2024, arXiv 2412.13663): its architecture
           (models/encoder.py MODERN; base is 22 x 768, large 28 x 1024), 30% masking, no NSP,
           packed rows that keep documents apart (data.document_mask), StableAdamW's
           hyperparameters on AdamW, a warmup-stable-decay schedule and a batch-size warmup.
           Phase 1 at 1024 tokens, then the long-context phase at 8192 from its checkpoint,
           the global layers' RoPE base raised to 160,000:
             python -m pretrain.train --config=configs/bert.py:base,recipe=modern --workdir=RUN1K
             python -m pretrain.train --config=configs/bert.py:base,recipe=modern,seq=8192 \
                 --workdir=RUN8K --config.init_from=RUN1K

Masking is always dynamic (fresh masks every step, keyed by seed, step and example).
"""

import ml_collections

from configs import common
from models import encoder

RECIPES = ("bert", "roberta", "modern")


def mlm_config(seq_len):
  mlm = ml_collections.ConfigDict()
  mlm.nsp = True  # build sentence pairs with next-sentence labels
  mlm.mask_prob = 0.15
  mlm.mask_token_prob = 0.8  # of the selected: [MASK]
  mlm.random_token_prob = 0.1  # of the selected: a random token (the rest stay unchanged)
  mlm.max_predictions = 20 if seq_len <= 128 else 80  # BERT's max_predictions_per_seq
  mlm.whole_word = False
  mlm.short_seq_prob = 0.1
  mlm.dupe_factor = 1  # passes over the corpus when building pairs
  return mlm


def get_config(arg="base"):
  args = common.parse_arg(arg, size="base", recipe="bert", seq=128)
  if args.recipe not in RECIPES:
    raise ValueError(
      f"config arg: unknown recipe {args.recipe!r}; choose one of {', '.join(RECIPES)}"
    )
  if args.recipe == "modern":
    return modern_config(args.size, args.seq)
  config = common.base_config()
  config.model = common.model_config(encoder, args.size)
  roberta = args.recipe == "roberta"
  config.objective = "mlm" if roberta else "mlm_nsp"
  config.model.nsp_head = not roberta

  seq = 512 if roberta else args.seq
  config.data.tokenizer.kind = "wordpiece"
  config.data.tokenizer.vocab_size = 30522
  config.data.tokenizer.eos_token = "[SEP]"
  config.data.mlm = mlm_config(seq)
  config.data.mlm.nsp = not roberta
  config.batch.seq_len = seq
  config.optimizer.update(
    schedule="linear", min_lr=0.0, b1=0.9, eps=1e-6, weight_decay=0.01, grad_clip=1.0
  )
  if roberta:  # RoBERTa-base: 8K batches, peak 6e-4, beta2 0.98, 24K warmup, 500K steps
    config.batch.size = 8192
    config.optimizer.update(lr=6e-4, b2=0.98, warmup_steps=24_000)
    config.train.total_steps = 500_000
  else:  # BERT: 256 x 128 for 900K steps, then 256 x 512 for 100K; lr 1e-4, 10K warmup
    config.batch.size = 256
    config.optimizer.update(lr=1e-4, b2=0.999, warmup_steps=10_000 if seq <= 128 else 1_000)
    config.train.total_steps = 900_000 if seq <= 128 else 100_000
  config.train.eval_every = 10_000
  config.train.eval_batches = 20
  config.checkpoint.every = 10_000

  if args.size == "smoke":  # seconds on a laptop CPU, on the bundled corpus
    # Paragraphs as documents and 10% of them held out: ~20K validation tokens, so that the
    # evaluation is not a handful of topics (5% of the 79 topic files is 4 documents).
    config.data.update(doc_split="blank_line", validation_fraction=0.1)
    config.data.tokenizer.vocab_size = 1024
    config.batch.size = 16
    config.batch.seq_len = min(seq, 64)
    config.data.mlm.max_predictions = 10
    config.optimizer.update(lr=1e-3, warmup_steps=20)
    config.train.update(total_steps=200, log_every=20, eval_every=100, eval_batches=4)
    config.checkpoint.every = 100
  return config


def modern_config(size, seq):
  """ModernBERT's recipe (modernbert-base-pretrain.yaml, the paper's Section 2.2 and Table 3):
  seq 1024 (or 8192: the long-context phase, from phase 1's checkpoint through init_from)."""
  if size not in encoder.MODERN_SIZES:
    raise ValueError(
      f"config arg: unknown size {size!r} for recipe=modern; choose one of "
      f"{', '.join(encoder.MODERN_SIZES)}"
    )
  seq = 1024 if seq == 128 else seq  # the recipe's phase 1 unless a length is asked for
  config = common.base_config()
  config.model = ml_collections.ConfigDict(encoder.DEFAULTS)
  config.model.update(encoder.MODERN, **encoder.MODERN_SIZES[size], size=size)
  config.model.max_len = max(config.model.max_len, seq)
  if seq > 1024:
    config.model.rope_theta = 160000.0  # the global layers' base for long context
  config.objective = "mlm"
  config.data.tokenizer.update(kind="wordpiece", vocab_size=50368, eos_token="[SEP]")
  config.data.mlm = mlm_config(seq)
  config.data.mlm.update(nsp=False, mask_prob=0.3)
  config.data.mlm.max_predictions = _modern_predictions(seq)
  config.data.document_mask = True  # packed rows, documents kept apart: no pad FLOPs
  large = size == "large"
  # 4608 sequences (large: 4928) in microbatches of 96 (large: 88), the released yaml's
  # device_train_microbatch_size, ramped up from one microbatch over the first 50B tokens
  # (large: 10B). The long-context phase keeps the tokens per batch (fewer, longer rows) and
  # starts from a checkpoint, so without the ramp.
  sequences, micro = (4928, 88) if large else (4608, 96)
  sequences = sequences * 1024 // max(seq, 1024)
  config.batch.update(size=sequences, seq_len=seq, grad_accum=max(1, sequences // micro))
  if seq <= 1024:
    tokens = 10e9 if large else 50e9
    config.batch.warmup_steps = int(2 * tokens / (config.batch.size * seq))
  config.optimizer.update(
    name="adamw", lr=8e-4 if size != "large" else 5e-4, min_lr=0.0, b1=0.9, b2=0.98, eps=1e-6
  )
  config.optimizer.update(weight_decay=1e-5, grad_clip=1.0, schedule="wsd", decay_fraction=0.1)
  config.optimizer.warmup_steps = int((3e9 if size != "large" else 2e9) / (config.batch.size * seq))
  config.train.update(total_steps=0, total_tokens=int(1.719e12), eval_every=4000, eval_batches=20)
  config.checkpoint.every = 4000
  if size in ("smoke", "tiny", "mini"):
    _modern_on_a_cpu(config, seq)
  return config


def _modern_predictions(seq):
  """Masked-LM predictions per row at 30% masking, with a tenth to spare."""
  return max(1, round(seq * 0.3 * 1.1))


def _modern_on_a_cpu(config, seq):
  """The recipe at a CPU's scale, on the bundled corpus (seconds for smoke)."""
  config.data.update(doc_split="blank_line", validation_fraction=0.1)
  config.data.tokenizer.vocab_size = 1024
  seq = 256 if seq > 1024 else 64  # the long-context phase at 4x
  config.batch.update(size=16, seq_len=seq, grad_accum=2, warmup_steps=20)
  config.model.max_len = max(seq, 64)
  config.data.mlm.max_predictions = _modern_predictions(seq)
  config.optimizer.update(lr=2e-3, warmup_steps=20)
  config.train.update(total_tokens=0, total_steps=200, log_every=20, eval_every=100, eval_batches=4)
  config.checkpoint.every = 100
