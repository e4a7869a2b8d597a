"""Launchers: how a run gets onto machines.

Today a run is started directly (`python -m pretrain.train ...`); multi-process runs set
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID per process (see
pretrain/distributed.py). Launchers for local multi-process runs, TPU VMs, SLURM and GKE
belong here; none is built yet.
"""
