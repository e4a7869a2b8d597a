"""No pickle anywhere in loading, and config values never reach a shell unquoted: every
launcher passes argument lists, and quotes what must go through a remote shell."""

import json
import re
import shlex

from launch import gke, local, slurm, sweep, sweep_trials, tpu_vm
from tests.helpers import REPO

NASTY = """--config.data.files=x; rm -rf /tmp/canary 'q" $(touch /tmp/canary) `id`"""
PACKAGES = ("pretrain", "models", "input_pipeline", "configs", "launch", "benchmarks")
UNSAFE = re.compile(
  r"\bimport (c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b|"
  r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|\byaml\.load\(|"
  r"(?<![.\w])(?<!def )(eval|exec)\("
)


def test_no_pickle_or_unsafe_loading_in_the_code():
  found = []
  for package in PACKAGES:
    for path in sorted((REPO / package).rglob("*.py")):
      for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if UNSAFE.search(code) or ("torch.load(" in code and "weights_only=True" not in code):
          found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
  assert not found, "\n".join(found)
  assert len(list((REPO / "pretrain").rglob("*.py"))) > 10  # the scan saw the code


def _argument(words):
  return [w for w in words if w.startswith("--config.data.files=")]


def test_launchers_pass_values_through_intact():
  args = ["--config=configs/gpt.py:small", NASTY, "--workdir=w"]
  # SLURM: the srun line of the batch script
  line = slurm.script(1, 8, "1:00:00", "j", "", "", args).splitlines()[-1]
  assert _argument(shlex.split(line)) == [NASTY]
  # TPU VM: the remote shell command inside ssh's --command=
  run = tpu_vm.commands("n", "z", "v5p-8", "v", "", False, args, ["run"])[0]
  remote = next(a for a in run if a.startswith("--command="))[len("--command=") :]
  assert _argument(shlex.split(remote)) == [NASTY]
  # GKE: the container's argv, as JSON
  manifest = json.loads(json.dumps(gke.manifest("n", "i", "t", "2x2", 1, 4, args)))
  command = manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
    "containers"
  ][0]["command"]
  assert _argument(command) == [NASTY]
  # local: its dry run prints what it runs
  rendered = local.render(local.process_envs(2, 1234), ["python", "-m", "pretrain.train", *args])
  assert all(_argument(shlex.split(r)) == [NASTY] for r in rendered)
  # sweeps: a trial's argv, and the worker line of the sbatch script
  spec = {
    "config": "configs/gpt.py:smoke",
    "overrides": [NASTY],
    "objective_overrides": [],
    "sweep": "lr",
    "storage": "sqlite:///s.db",
    "cwd": "/tmp/x y",
  }
  trial = sweep_trials.trial_command(spec, {"optimizer.lr": 0.1}, "w")
  assert _argument(trial) == [NASTY]
  script = sweep.slurm_script(
    spec, "/tmp/s", sweep.worker_args(spec, "/tmp/s", 0, 60, 3, 1), 2, 1, 8, 1, "1:00:00", "", ""
  )
  assert _argument(shlex.split(script.splitlines()[-1])) == [NASTY]
  assert "cd '/tmp/x y'" in script
