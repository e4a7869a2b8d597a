"""What the pretrain entry points share: multi-host flags, and user errors (configs/errors.py)
reported as one `error: ...` line with exit status 2; anything else keeps its traceback."""
from absl import flags

from configs import errors

COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-host).")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Processes in the job (multi-host).")
PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                "Let JAX detect the cluster (TPU pod, SLURM, Kubernetes).")


def start_distributed():
  """jax.distributed from the multi-host flags or the environment (pretrain/distributed.py)."""
  from pretrain import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value,
                         DISTRIBUTED.value)


def run_reporting_user_errors(fn, *args, **kwargs):
  """Calls fn; a user error (or a non-finite loss) becomes one `error:` line and exit 2."""
  try:
    return fn(*args, **kwargs)
  except (errors.UserError, FloatingPointError) as e:
    errors.fail(str(e))
