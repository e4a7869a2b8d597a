r"""A SLURM batch job: one process per node with all its GPUs, started by srun.

  python -m launch.slurm --nodes=4 --gpus_per_node=8 --time=24:00:00 --dry_run -- \
      --config=configs/gpt.py:medium --workdir=/shared/runs/gpt2-medium

Everything after -- goes to `python -m pretrain.train`. jax.distributed reads SLURM's
variables itself (PRETRAIN_DISTRIBUTED=1). --dry_run prints the sbatch script and the command
that submits it; otherwise the script is written to --script and submitted with sbatch.
"""

import shlex
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags, defined only when this module is the program (so that the launchers
  can be imported side by side, e.g. by tests)."""
  flags.DEFINE_integer("nodes", 1, "Nodes.")
  flags.DEFINE_integer("gpus_per_node", 8, "GPUs per node.")
  flags.DEFINE_string("time", "24:00:00", "Wall-clock limit.")
  flags.DEFINE_string("job_name", "pretrain", "Job name.")
  flags.DEFINE_string("partition", "", "Partition (default: the cluster's).")
  flags.DEFINE_string("setup", "", "Shell lines run first on each node (e.g. module load).")
  flags.DEFINE_string("script", "pretrain.sbatch", "Where to write the batch script.")
  flags.DEFINE_bool("dry_run", False, "Print the script and command; submit nothing.")


def script(nodes, gpus_per_node, time, job_name, partition, setup, train_args):
  lines = [
    "#!/bin/bash",
    f"#SBATCH --job-name={job_name}",
    f"#SBATCH --nodes={nodes}",
    "#SBATCH --ntasks-per-node=1",
    f"#SBATCH --gpus-per-node={gpus_per_node}",
    f"#SBATCH --time={time}",
    "#SBATCH --output=%x-%j.out",
    "#SBATCH --signal=TERM@120",  # preemption/time limit: SIGTERM lets the trainer checkpoint
  ]
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  lines += ["set -euo pipefail"] + ([setup] if setup else [])
  lines.append(shlex.join(srun(["python", "-m", "pretrain.train", *train_args])))
  return "\n".join(lines) + "\n"


def srun(command):
  """`command` as a job step on every node of the allocation, one process each, wired together
  by jax.distributed from SLURM's variables (a sweep's multi-node trials start this way too)."""
  return ["srun", "--kill-on-bad-exit=1", "env", "PRETRAIN_DISTRIBUTED=1", *command]


def main(argv):
  text = script(
    FLAGS.nodes,
    FLAGS.gpus_per_node,
    FLAGS.time,
    FLAGS.job_name,
    FLAGS.partition,
    FLAGS.setup,
    argv[1:],
  )
  submit = ["sbatch", FLAGS.script]
  if FLAGS.dry_run:
    print(text + "# submit with:\n" + shlex.join(submit))
    return
  with open(FLAGS.script, "w", encoding="utf-8") as f:
    f.write(text)
  sys.exit(subprocess.call(submit))


if __name__ == "__main__":
  define_flags()
  app.run(main)
