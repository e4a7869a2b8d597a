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

Masking is always dynamic (fresh masks every step, keyed by seed, step and example).
"""

import ml_collections

from configs import common
from models import encoder

RECIPES = ("bert", "roberta")


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
