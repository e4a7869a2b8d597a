"""What the command-line entry points share: multi-host flags, one-line errors, exit codes.

A user error (a bad config value, missing data, an incompatible checkpoint) prints one
`error: ...` line naming the field and the fix, and exits with status 2 before any expensive
work; anything else is a bug and keeps its traceback.
"""
import sys

from absl import flags

COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-host).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the job (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                "Let JAX detect the cluster (TPU pod, SLURM, Kubernetes).")

# Errors a user can fix from the command line: printed as one line, exit status 2.
USER_ERRORS = ("ConfigError", "MeshError", "AxisRuleError", "DataError", "TokenizerError",
               "CheckpointError")


def fail(message):
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


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
  fail(message)


def start_distributed():
  """jax.distributed from the multi-host flags or the environment (pretrain/distributed.py)."""
  from pretrain import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                         DISTRIBUTED.value)


def run_reporting_user_errors(fn, *args, **kwargs):
  """Calls fn; a user error (or a non-finite loss) becomes one `error:` line and exit 2."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    if type(e).__name__ in USER_ERRORS or isinstance(e, FloatingPointError):
      fail(str(e))
    raise
