r"""Fine-tunes an encoder on a GLUE task: sentence (pair) classification, STS-B regression.

  python -m pretrain.train --config=configs/finetune/glue.py:sst2 --config.init_from=runs/bert \
      --workdir=runs/sst2
  python -m pretrain.train --config=configs/finetune/glue.py:mrpc,size=base \
      --config.init_from=runs/bert --workdir=runs/mrpc
  # offline, from GLUE's own TSV files:
  python -m pretrain.train --config=configs/finetune/glue.py:sst2 --config.init_from=runs/bert \
      --config.data.files=glue/SST-2/train.tsv,glue/SST-2/dev.tsv --workdir=runs/sst2
  python -m pretrain.evaluate --workdir=runs/sst2 --best --predict=runs/sst2/SST-2.tsv

Tasks (input_pipeline/finetuning/glue.py TASKS): cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli; data
from tfds `glue/<task>` in config.data.data_dir, or config.data.files. The checkpoint is ranked
by the task's metric: Matthews correlation (CoLA), Pearson (STS-B), accuracy (the rest; F1 is
reported beside it for MRPC and QQP).

The BERT paper's fine-tuning grid, ranked by that metric (launch/sweep.py):

  python -m launch.sweep --config=configs/finetune/glue.py:mrpc --sweep=bert \
      --config.init_from=runs/bert --sweepdir=runs/sweeps/mrpc
"""

from configs import common, sweeps
from configs.finetune import recipe
from input_pipeline.finetuning import glue


def get_config(arg="sst2"):
  args = common.parse_arg(arg, positional="task", task="sst2", size="from_init", seq=128)
  task = glue.get_task(args.task)
  config = recipe.base_config("classification", args.size, args.seq)
  config.model.num_labels = task.num_labels
  config.data.update(task=task.name, dataset=f"glue/{task.name}", eval_split=task.eval_split)
  config.train.best_metric = task.metrics[0]
  return config


def sweep_bert():
  """Learning rate x batch size, as the BERT paper tuned on each task's dev set; ranked by
  the task's metric (config.train.best_metric, maximised)."""
  return sweeps.grid({"optimizer.lr": [2e-5, 3e-5, 5e-5], "batch.size": [16, 32]})
