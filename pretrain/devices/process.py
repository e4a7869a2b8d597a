"""What the pretrain entry points share: multi-host flags, and user errors (pretrain/ground/errors.py)
reported as one `error: ...` line with exit status 2; anything else keeps its traceback."""

import errno
import os
import sys

from absl import flags
from ml_collections import config_flags

from pretrain.devices import distributed, host_memory
from pretrain.ground import errors
from pretrain.training import durations

COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-host).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the job (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Let JAX detect the cluster (TPU pod, SLURM, Kubernetes)."
)


def command_line_config(config_flag):
  """The config of a --config flag, with the command line's run length preferred to the
  config file's (pretrain/training/durations.py: prefer_command_line, which prints what it replaced)."""
  config = config_flag.value
  line = durations.prefer_command_line(
    config.train, config_flags.get_override_values(flags.FLAGS[config_flag.name])
  )
  if line:
    print(line, flush=True)
  return config


def start():
  """What an entry point that runs steps does before JAX starts its backend: host memory on CPU
  (pretrain/devices/host_memory.py; a bad PRETRAIN_HOST_MALLOC is one line), then
  jax.distributed from the multi-host flags or the environment
  (pretrain/devices/distributed.py)."""
  run_reporting_user_errors(host_memory.configure)
  distributed.initialize(
    COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value, DISTRIBUTED.value
  )


def run_reporting_user_errors(fn, *args, where=None, **kwargs):
  """Calls fn; a user error (or a non-finite loss) becomes one `error:` line and exit 2, and
  so does a full disk (`where`: the directory being written, named in the message); Ctrl-C
  that reaches here (the trainer saves on its own once it trains) is one line and exit 130."""
  try:
    return fn(*args, **kwargs)
  except (errors.UserError, FloatingPointError) as e:
    errors.fail(str(e))
  except KeyboardInterrupt:
    sys.stdout.flush()
    print("interrupted: stopped before anything was saved", file=sys.stderr, flush=True)
    sys.exit(130)  # 128 + SIGINT, as shells expect
  except Exception as e:
    if not _no_space(e):
      raise
    _last_line(
      f"error: no space left on the device of {where or 'the run'}; the checkpoints "
      "saved before are intact: free space and rerun the same command to resume"
    )
    os._exit(2)  # now: exit handlers would only fail again writing to the full disk


def _last_line(line):
  """Writes `line` to stderr as its last: other threads still failing on the full disk (the
  checkpointer's) write to /dev/null from here on, not after it."""
  sys.stdout.flush()
  sys.stderr.flush()
  err = os.dup(2)
  null = os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 1)
  os.dup2(null, 2)
  os.write(err, (line + "\n").encode())


def _no_space(error):
  """Whether `error`, or what caused it, is a write that found the disk full."""
  while error is not None:
    if (
      isinstance(error, OSError) and error.errno == errno.ENOSPC
    ) or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False
