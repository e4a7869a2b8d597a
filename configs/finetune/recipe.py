"""The fine-tuning recipe every task config starts from (BERT's, Devlin et al. 2019).

AdamW (beta2 0.999, eps 1e-6, weight decay 0.01 on matrices), lr 3e-5 warmed up over the
first 10% of the run and decayed linearly to 0, batch 32, dropout 0.1, 3 epochs; the dev set is
evaluated after every epoch, and the best checkpoint by the task's dev metric is kept in
<workdir>/best beside the latest. The model is config.init_from's (size 'from_init'); a size
name (size=base) builds that size instead and is checked against the checkpoint.
"""

from configs import common
from models import encoder


def base_config(objective, size="from_init", seq=128):
  config = common.base_config()
  config.objective = objective
  config.model = common.model_config(encoder, "base" if size == "from_init" else size)
  config.model.size = size
  config.model.nsp_head = False
  config.data.dataset = ""  # a tfds name (the task config sets it), or ...
  config.data.files = ""  # ... local files: 'TRAIN,EVAL' in the task's format
  config.data.task = ""
  # Several examples a row, each its own segment with its own [CLS] and label, instead of one
  # a row and the rest padding; the predictions and metrics are the same. batch.size counts
  # rows, so a packed step holds several times the examples (the log says how many a row).
  config.data.pack_examples = False
  # Only without config.init_from (which brings its own tokenizer): trained on the task's text.
  config.data.tokenizer.update(kind="wordpiece", vocab_size=30522, eos_token="[SEP]")
  config.batch.update(size=32, seq_len=seq)
  config.optimizer.update(
    lr=3e-5,
    min_lr=0.0,
    schedule="linear",
    warmup_fraction=0.1,
    b1=0.9,
    b2=0.999,
    eps=1e-6,
    weight_decay=0.01,
    grad_clip=1.0,
  )
  config.train.update(
    epochs=3.0, total_steps=0, eval_every=-1, eval_batches=0, log_every=50, best_mode="max"
  )
  config.checkpoint.update(every=-1, keep=1, keep_best=True)
  return config
