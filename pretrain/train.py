r"""Pretrains a model: `python -m pretrain.train --config=configs/gpt.py:smoke --workdir=runs/gpt`.

Override any config field with --config.<section>.<field>=<value>. Rerunning the same command
resumes from the latest checkpoint in --workdir.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py:arg).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and metrics.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the job (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Let JAX detect the cluster (TPU pod, SLURM, Kubernetes).")
flags.mark_flags_as_required(["config", "workdir"])

# Errors a user can fix from the command line: printed as one line, exit status 2.
USER_ERRORS = ("ConfigError", "MeshError", "AxisRuleError", "DataError", "TokenizerError",
               "CheckpointError")


def parse_flags(argv):
  """absl flag parsing, with config-file and override errors reduced to one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    errors = [l.split(": ", 1)[1] for l in lines if l.startswith(("ValueError:", "KeyError:"))]
    message = errors[-1] if errors else lines[0] if lines else str(e)
  except (KeyError, AttributeError) as e:  # an override of a field the config does not have
    message = f"unknown config field {str(e).strip(chr(34))}; check the --config.<path> spelling"
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from pretrain import distributed, trainer  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # orbax and tfds log every step of a save at INFO
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         _DISTRIBUTED.value)
  try:
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ in USER_ERRORS or isinstance(e, FloatingPointError):
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)
    raise


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
