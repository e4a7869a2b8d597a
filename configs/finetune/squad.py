r"""Fine-tunes an encoder for extractive question answering (SQuAD v1.1, or v2.0).

  python -m pretrain.train --config=configs/finetune/squad.py --config.init_from=runs/bert \
      --workdir=runs/squad
  python -m pretrain.train --config=configs/finetune/squad.py:version=2 \
      --config.init_from=runs/bert --workdir=runs/squad2
  # offline, SQuAD JSON files:
  python -m pretrain.train --config=configs/finetune/squad.py --config.init_from=runs/bert \
      --config.data.files=train-v1.1.json,dev-v1.1.json --workdir=runs/squad
  python -m pretrain.evaluate --workdir=runs/squad --best --predict=predictions.json

Contexts longer than the window are split into windows `doc_stride` tokens apart; predicted
spans (the best of the n-best start/end pairs, at most max_answer_len tokens) are mapped back
to the context's characters. Metrics: EM and F1 with SQuAD's answer normalisation; v2.0 also
the no-answer scores and the best null threshold. BERT's recipe: seq 384, 2 epochs.
"""

import ml_collections

from configs import common
from configs.finetune import recipe


def get_config(arg=""):
  args = common.parse_arg(arg, size="from_init", seq=384, version=1)
  config = recipe.base_config("span_extraction", args.size, args.seq)
  config.model.num_labels = 2  # start and end
  v2 = args.version == 2
  config.data.update(task="squad", dataset="squad/v2.0" if v2 else "squad/v1.1")
  config.data.squad = ml_collections.ConfigDict(
    dict(
      version_2=v2,
      doc_stride=128,
      max_query_len=64,
      n_best=20,
      max_answer_len=30,
      null_threshold=0.0,
    )
  )
  config.train.update(epochs=2.0, best_metric="f1")
  return config
