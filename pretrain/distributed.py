"""Multi-process start-up: jax.distributed from environment variables, when asked for.

Single-process runs need nothing. For several processes, set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID (the local launcher does), or run where JAX detects the
cluster itself (TPU pods, SLURM, Kubernetes) with PRETRAIN_DISTRIBUTED=1.
"""
import os

import jax


def initialize():
  if jax.distributed.is_initialized():
    return
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  elif os.environ.get("PRETRAIN_DISTRIBUTED") == "1":
    jax.distributed.initialize()
