"""Multi-process start-up: jax.distributed, from the environment or JAX's cluster detection.

Single-process runs need nothing. For several processes either
  * pass --coordinator_address, --num_processes and --process_id to pretrain.train, or set
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (launch/local.py does), or
  * pass --distributed (or set PRETRAIN_DISTRIBUTED=1) where JAX detects the cluster itself
    (TPU pods, SLURM, Kubernetes; the launch/ templates do this): jax.distributed.initialize().
On CPU the processes exchange collectives through gloo (JAX_CPU_COLLECTIVES, default 'gloo').
"""

import os

import jax


def initialize(coordinator_address="", num_processes=0, process_id=-1, auto=False):
  """Starts jax.distributed from the arguments, else from the environment, else not at all.

  Arguments win over JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID; `auto` (or
  PRETRAIN_DISTRIBUTED=1) lets JAX detect a TPU pod, SLURM job or Kubernetes job by itself.
  """
  if jax.distributed.is_initialized():
    return
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  auto = auto or os.environ.get("PRETRAIN_DISTRIBUTED") == "1"
  if not coordinator_address and not auto:
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update(
      "jax_cpu_collectives_implementation", os.environ.get("JAX_CPU_COLLECTIVES", "gloo")
    )
  if coordinator_address:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes or int(os.environ["JAX_NUM_PROCESSES"]),
      process_id=process_id if process_id >= 0 else int(os.environ["JAX_PROCESS_ID"]),
    )
  else:
    jax.distributed.initialize()
