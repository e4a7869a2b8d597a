"""Launchers: how a run gets onto machines.

local.py   N processes on this machine (fake CPU devices + gloo, or one GPU set each)
tpu_vm.py  a Cloud TPU VM slice: create, copy, install, run on all workers, delete
slurm.py   an sbatch script with srun, one process per node
gke.py     a JobSet manifest for a TPU slice on GKE
Each has --dry_run, which prints the exact commands (tests/launch checks them).
"""
