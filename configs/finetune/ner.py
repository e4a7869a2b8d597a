r"""Fine-tunes an encoder for named-entity recognition (token classification, CoNLL-2003).

  python -m pretrain.train --config=configs/finetune/ner.py --config.init_from=runs/bert \
      --workdir=runs/ner
  # offline, CoNLL files (word ... tag per line, a blank line between sentences):
  python -m pretrain.train --config=configs/finetune/ner.py --config.init_from=runs/bert \
      --config.data.files=train.conll,dev.conll --workdir=runs/ner
  # another tag set: --config.data.labels=O,B-GENE,I-GENE --config.model.num_labels=3

Word labels go on each word's first word piece (the others are ignored by the loss); the
metric is entity-level F1 as seqeval computes it.
"""

from configs import common
from configs.finetune import recipe

CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def get_config(arg=""):
  args = common.parse_arg(arg, size="from_init", seq=128)
  config = recipe.base_config("token_classification", args.size, args.seq)
  config.model.num_labels = len(CONLL2003_TAGS)
  config.data.update(task="conll2003", dataset="conll2003", labels=",".join(CONLL2003_TAGS))
  config.train.best_metric = "f1"
  return config
