r"""A run on a Cloud TPU VM slice (pod): create, copy the code, install, run on all workers
(streaming their logs), delete. Only the code travels: the files git tracks (in their
working-tree state), packed into one archive, not ./data, ./runs or anything else untracked.

  python -m launch.tpu_vm --name=gpt2 --zone=us-east5-a --accelerator_type=v5p-32 \
      --dry_run -- --config=configs/gpt.py:small --workdir=gs://BUCKET/runs/gpt2

Everything after -- goes to `python -m pretrain.train`. Every worker runs the same command;
PRETRAIN_DISTRIBUTED=1 makes jax.distributed find the other workers itself. --workdir should be
a bucket (gs://...) all workers can write. --steps picks the stages (default: all of them);
--dry_run prints the exact gcloud commands instead of running them.
"""

import shlex
import subprocess
import sys

from absl import app, flags

from launch import shared_storage

FLAGS = flags.FLAGS


REMOTE_DIR = "~/pretrain"


def define_flags():
  """Command-line flags, defined only when this module is the program (so that the launchers
  can be imported side by side, e.g. by tests)."""
  flags.DEFINE_string("name", None, "TPU VM name.")
  flags.DEFINE_string("zone", None, "Zone, e.g. us-east5-a.")
  flags.DEFINE_string("accelerator_type", "v5p-8", "TPU type and size, e.g. v5p-32.")
  flags.DEFINE_string("version", "v2-alpha-tpuv5", "TPU VM software version.")
  flags.DEFINE_string("project", "", "GCP project (default: gcloud's).")
  flags.DEFINE_bool("spot", False, "Use spot (preemptible) capacity.")
  flags.DEFINE_list("steps", ["create", "copy", "install", "run", "delete"], "Stages.")
  flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


def commands(name, zone, accelerator_type, version, project, spot, train_args, steps):
  """The gcloud command lines of each stage, in order."""
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  where = [f"--zone={zone}"] + ([f"--project={project}"] if project else [])
  train = " ".join(
    ["cd", REMOTE_DIR, "&&", "PRETRAIN_DISTRIBUTED=1", "python3", "-m", "pretrain.train"]
    + [shlex.quote(a) for a in train_args]
  )
  archive = f"/tmp/pretrain-{name}.tar.gz"
  stages = {
    "create": [
      tpu
      + ["create", name, *where, f"--accelerator-type={accelerator_type}", f"--version={version}"]
      + (["--spot"] if spot else [])
    ],
    "copy": [
      ["sh", "-c", f"git ls-files -z | tar --null -czf {archive} -T -"],
      tpu + ["scp", "--worker=all", *where, archive, f"{name}:pretrain.tar.gz"],
      tpu
      + [
        "ssh",
        name,
        *where,
        "--worker=all",
        f"--command=mkdir -p {REMOTE_DIR} && tar -xzf pretrain.tar.gz -C {REMOTE_DIR}",
      ],
    ],
    "install": [
      tpu
      + [
        "ssh",
        name,
        *where,
        "--worker=all",
        f'--command=cd {REMOTE_DIR} && pip install -e ".[tpu]"',
      ]
    ],
    "run": [tpu + ["ssh", name, *where, "--worker=all", f"--command={train}"]],
    "delete": [tpu + ["delete", name, *where, "--quiet"]],
  }
  unknown = [s for s in steps if s not in stages]
  if unknown:
    raise app.UsageError(f"--steps: unknown {unknown}; choose from {list(stages)}")
  return [cmd for s in steps for cmd in stages[s]]


def main(argv):
  if not FLAGS.name or not FLAGS.zone:
    raise app.UsageError("--name and --zone are required")
  shared_storage.require_bucket(argv[1:], "a TPU slice's workers")
  cmds = commands(
    FLAGS.name,
    FLAGS.zone,
    FLAGS.accelerator_type,
    FLAGS.version,
    FLAGS.project,
    FLAGS.spot,
    argv[1:],
    FLAGS.steps,
  )
  for cmd in cmds:
    print(shlex.join(cmd), flush=True)
    if not FLAGS.dry_run:
      code = subprocess.call(cmd)  # ssh --worker=all streams every worker's output
      if code:
        sys.exit(code)


if __name__ == "__main__":
  define_flags()
  app.run(main)
