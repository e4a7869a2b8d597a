"""What the command-line entry points share: multi-host flags, one-line errors, exit codes.

A user error (a bad config value, missing data, an incompatible checkpoint) prints one
`error: ...` line naming the field and the fix, and exits with status 2 before any expensive
work; anything else is a bug and keeps its traceback.
"""
import re
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


def parse_flags(argv, define=None):
  """absl flag parsing, with config-file and override errors reduced to one line. `define`,
  if given, defines more flags first (it may already apply the --config overrides)."""
  try:
    if define is not None:
      define()
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    errors = [l.split(": ", 1)[1] for l in lines if l.startswith(("ValueError:", "KeyError:"))]
    message = errors[-1] if errors else lines[0] if lines else str(e)
  except (KeyError, AttributeError) as e:  # an override of a field the config does not have
    message = unknown_field(e, argv)
  fail(message)


def unknown_field(error, argv):
  """'unknown config field optimizer.lrr; did you mean optimizer.lr?' from ml_collections'
  KeyError/AttributeError ("'lrr'\nDid you mean \"lr\" instead of \"lrr\"?")."""
  text = error.args[0] if error.args else str(error)
  text = text.args[0] if isinstance(text, BaseException) and text.args else str(text)
  key = re.match(r"""\W*([^'"\s]+)""", text)
  key = key.group(1) if key else text
  paths = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  path = next((p for p in paths if key in p.split(".")), key)
  message = f"unknown config field {path}"
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  if suggestion:
    fixed = ".".join(suggestion.group(1) if part == key else part for part in path.split("."))
    return f"{message}; did you mean {fixed}?"
  return f"{message}; check the --config.<path> spelling"


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
