r"""Pretrains a model: `python -m pretrain.train --config=configs/gpt.py:smoke --workdir=runs/gpt`.

Override any config field with --config.<section>.<field>=<value>. Rerunning the same command
resumes from the latest checkpoint in --workdir; rerunning a finished run says so and exits 0.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from pretrain.devices import process
from pretrain.ground import errors
from pretrain.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config file (configs/*.py:arg).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step of a save at INFO
  process.start()
  result = process.run_reporting_user_errors(
    trainer.train_and_evaluate,
    process.command_line_config(_CONFIG),
    _WORKDIR.value,
    where=_WORKDIR.value,
  )
  sys.exit(result.exit_code)  # 130 after Ctrl-C


if __name__ == "__main__":
  app.run(main, flags_parser=errors.parse_flags)
