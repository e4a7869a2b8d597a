"""Multi-process start-up: jax.distributed, from the environment or JAX's cluster detection.

Single-process runs need nothing. For several processes either
  * set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (launch/local.py does,
    as do the SLURM and GKE templates in launch/), or
  * set PRETRAIN_DISTRIBUTED=1 where JAX detects the cluster itself (TPU pods, SLURM,
    Kubernetes): jax.distributed.initialize() with no arguments.
On CPU the processes exchange collectives through gloo (JAX_CPU_COLLECTIVES, default 'gloo').
"""
import os

import jax


def initialize():
  if jax.distributed.is_initialized():
    return
  explicit = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if not explicit and os.environ.get("PRETRAIN_DISTRIBUTED") != "1":
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation",
                      os.environ.get("JAX_CPU_COLLECTIVES", "gloo"))
  if explicit:
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
