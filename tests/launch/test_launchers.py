"""The launchers' --dry_run printouts are the exact commands a real launch runs."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from launch import gke, slurm, tpu_vm
from tests import helpers
from tests.helpers import REPO

TRAIN = ["--config=configs/gpt.py:small", "--workdir=gs://bucket/runs/gpt2"]


def _run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = helpers.run_python([sys.executable, "-m", module, *args], env)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


def test_tpu_vm_dry_run():
  out = _run(
    "launch.tpu_vm",
    "--name=gpt2",
    "--zone=us-east5-a",
    "--accelerator_type=v5p-32",
    "--dry_run",
    "--",
    *TRAIN,
  )
  assert out.splitlines() == [
    "gcloud compute tpus tpu-vm create gpt2 --zone=us-east5-a --accelerator-type=v5p-32 "
    "--version=v2-alpha-tpuv5",
    # only the files git tracks travel, not ./data or ./runs
    "sh -c 'git ls-files -z | tar --null -czf /tmp/pretrain-gpt2.tar.gz -T -'",
    "gcloud compute tpus tpu-vm scp --worker=all --zone=us-east5-a /tmp/pretrain-gpt2.tar.gz "
    "gpt2:pretrain.tar.gz",
    "gcloud compute tpus tpu-vm ssh gpt2 --zone=us-east5-a --worker=all '--command=mkdir -p "
    "~/pretrain && tar -xzf pretrain.tar.gz -C ~/pretrain'",
    "gcloud compute tpus tpu-vm ssh gpt2 --zone=us-east5-a --worker=all "
    "'--command=cd ~/pretrain && pip install -e \".[tpu]\"'",
    "gcloud compute tpus tpu-vm ssh gpt2 --zone=us-east5-a --worker=all '--command=cd "
    "~/pretrain && PRETRAIN_DISTRIBUTED=1 python3 -m pretrain.train "
    "--config=configs/gpt.py:small --workdir=gs://bucket/runs/gpt2'",
    "gcloud compute tpus tpu-vm delete gpt2 --zone=us-east5-a --quiet",
  ]
  # Stages can be picked; project and spot capacity are passed through.
  cmds = tpu_vm.commands("n", "z", "v5p-8", "v", "proj", True, [], ["create"])
  assert cmds == [
    [
      "gcloud",
      "compute",
      "tpus",
      "tpu-vm",
      "create",
      "n",
      "--zone=z",
      "--project=proj",
      "--accelerator-type=v5p-8",
      "--version=v",
      "--spot",
    ]
  ]


def test_slurm_dry_run():
  out = _run(
    "launch.slurm",
    "--nodes=4",
    "--gpus_per_node=8",
    "--time=02:00:00",
    "--partition=gpu",
    "--setup=module load cuda",
    "--dry_run",
    "--",
    *TRAIN,
  )
  assert out == (
    "#!/bin/bash\n#SBATCH --job-name=pretrain\n#SBATCH --nodes=4\n#SBATCH --ntasks-per-node=1\n"
    "#SBATCH --gpus-per-node=8\n#SBATCH --time=02:00:00\n#SBATCH --output=%x-%j.out\n"
    "#SBATCH --signal=TERM@120\n#SBATCH --partition=gpu\nset -euo pipefail\nmodule load cuda\n"
    "srun --kill-on-bad-exit=1 env PRETRAIN_DISTRIBUTED=1 python -m pretrain.train "
    "--config=configs/gpt.py:small --workdir=gs://bucket/runs/gpt2\n"
    "# submit with:\nsbatch pretrain.sbatch\n"
  )
  assert "--partition" not in slurm.script(1, 8, "1:00:00", "j", "", "", [])


def test_gke_dry_run():
  """The printed JobSet, checked field by field against what GKE and JobSet expect."""
  out = _run(
    "launch.gke",
    "--name=gpt2",
    "--image=registry/pretrain:1",
    "--hosts=4",
    "--tpu_type=tpu-v6e-slice",
    "--topology=4x4",
    "--chips_per_host=8",
    "--dry_run",
    "--",
    *TRAIN,
  )
  text, command = out.split("\n# apply with:\n")
  assert command == "kubectl apply -f -\n"
  jobset = json.loads(text)  # JSON, which kubectl reads as YAML
  assert yaml.safe_load(text) == jobset
  assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and jobset["kind"] == "JobSet"
  assert jobset["metadata"] == {
    "name": "gpt2",
    # one slice per node pool: no two JobSets share a slice's hosts
    "annotations": {"alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"},
  }
  assert jobset["spec"]["failurePolicy"] == {"maxRestarts": 3}
  # one replicated job (one slice), one pod per host, a failed pod fails the job
  [workers] = jobset["spec"]["replicatedJobs"]
  assert workers["name"] == "workers" and workers["replicas"] == 1
  job = workers["template"]["spec"]
  assert (job["parallelism"], job["completions"], job["backoffLimit"]) == (4, 4, 0)
  pod = job["template"]["spec"]
  assert pod["restartPolicy"] == "Never"
  assert pod["nodeSelector"] == {
    "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
    "cloud.google.com/gke-tpu-topology": "4x4",
  }
  assert pod["terminationGracePeriodSeconds"] >= 60  # time to checkpoint after SIGTERM
  [container] = pod["containers"]
  assert container["image"] == "registry/pretrain:1"
  assert container["command"] == [
    "python",
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:small",
    "--workdir=gs://bucket/runs/gpt2",
  ]
  # jax.distributed is started from GKE's TPU environment; nothing else is set
  assert container["env"] == [{"name": "PRETRAIN_DISTRIBUTED", "value": "1"}]
  assert container["resources"] == {"limits": {"google.com/tpu": 8}}

  # The defaults: one host of a 2x2x1 v5p slice, 4 chips; no train args, no command tail.
  default = json.loads(_run("launch.gke", "--image=i", "--dry_run").split("\n# apply with:")[0])
  assert default["metadata"]["name"] == "pretrain"
  job = default["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert job["parallelism"] == job["completions"] == 1
  pod = job["template"]["spec"]
  assert pod["nodeSelector"] == {
    "cloud.google.com/gke-tpu-accelerator": "tpu-v5p-slice",
    "cloud.google.com/gke-tpu-topology": "2x2x1",
  }
  assert pod["containers"][0]["command"] == ["python", "-m", "pretrain.train"]
  assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == 4
  # and the launcher prints what `manifest` builds
  assert default == gke.manifest("pretrain", "i", "tpu-v5p-slice", "2x2x1", 1, 4, [])


def test_gke_requires_an_image():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = helpers.run_python([sys.executable, "-m", "launch.gke", "--dry_run"], env)
  assert proc.returncode != 0 and "--image is required" in proc.stderr
  assert not proc.stdout


@pytest.mark.parametrize(
  "launcher", [["launch.tpu_vm", "--name=n", "--zone=z"], ["launch.gke", "--image=i"]]
)
def test_cloud_launchers_refuse_a_local_workdir(launcher):
  """A slice's workers and a job's pods lose their disks with the machine: a local workdir is
  refused before anything is created (checkpoints would be scattered and lost)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = helpers.run_python(
    [
      sys.executable,
      "-m",
      *launcher,
      "--dry_run",
      "--",
      "--config=configs/gpt.py:small",
      "--workdir",
      "runs/gpt2",
    ],
    env,
  )
  assert proc.returncode != 0 and not proc.stdout
  assert "--workdir: 'runs/gpt2' is a local path" in proc.stderr
  assert "--workdir=gs://BUCKET/run" in proc.stderr


def test_local_dry_run():
  out = _run(
    "launch.local",
    "--num_processes=2",
    "--devices_per_process=4",
    "--port=5555",
    "--dry_run",
    "--",
    "python",
    "-m",
    "pretrain.train",
    "--workdir=w",
  )
  assert out.splitlines()[1] == (
    "JAX_COORDINATOR_ADDRESS=localhost:5555 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 "
    "JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES=gloo "
    "XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pretrain.train --workdir=w"
  )


def test_tpu_vm_copy_packs_only_tracked_files(tmp_path):
  """The pack command of the copy stage, run for real on this checkout."""
  import tarfile

  pack = tpu_vm.commands("n", "z", "v5p-8", "v", "", False, [], ["copy"])[0]
  assert pack[:2] == ["sh", "-c"]
  if subprocess.run(["git", "rev-parse"], cwd=REPO, capture_output=True).returncode:
    pytest.skip("not a git checkout")
  untracked = REPO / "data" / "pack-test-untracked.txt"
  made = not untracked.parent.exists()
  untracked.parent.mkdir(exist_ok=True)
  untracked.write_text("not code")
  try:
    script = pack[2].replace("/tmp/pretrain-n.tar.gz", str(tmp_path / "code.tar.gz"))
    subprocess.run(["sh", "-c", script], cwd=REPO, check=True)
  finally:
    untracked.unlink()
    if made:
      untracked.parent.rmdir()
  with tarfile.open(tmp_path / "code.tar.gz") as tar:
    names = tar.getnames()
  assert "pretrain/train.py" in names and "setup.py" in names
  assert not any(n.startswith(("data/", "runs/")) for n in names), names
