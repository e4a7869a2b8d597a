r"""A GKE JobSet for a TPU slice: one pod per TPU VM host, all running the same command.

  python -m launch.gke --name=gpt2 --image=REGISTRY/pretrain:latest --tpu_type=tpu-v5p-slice \
      --topology=2x2x4 --hosts=4 --dry_run -- --config=configs/gpt.py:small --workdir=gs://B/run

Everything after -- goes to `python -m pretrain.train`; jax.distributed finds the other hosts
from GKE's TPU environment (PRETRAIN_DISTRIBUTED=1). --dry_run prints the manifest and the
kubectl command; otherwise the manifest is piped to `kubectl apply -f -`.
"""

import json
import shlex
import subprocess
import sys

from absl import app, flags

from launch import shared_storage

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags, defined only when this module is the program (so that the launchers
  can be imported side by side, e.g. by tests)."""
  flags.DEFINE_string("name", "pretrain", "JobSet name.")
  flags.DEFINE_string("image", None, "Container image with this package installed.")
  flags.DEFINE_string("tpu_type", "tpu-v5p-slice", "cloud.google.com/gke-tpu-accelerator.")
  flags.DEFINE_string("topology", "2x2x1", "cloud.google.com/gke-tpu-topology.")
  flags.DEFINE_integer("hosts", 1, "TPU VM hosts in the slice (pods).")
  flags.DEFINE_integer("chips_per_host", 4, "google.com/tpu chips per host.")
  flags.DEFINE_bool("dry_run", False, "Print the manifest and command; apply nothing.")


def manifest(name, image, tpu_type, topology, hosts, chips_per_host, train_args):
  """The JobSet as a dict (JSON is valid YAML for kubectl)."""
  container = {
    "name": "train",
    "image": image,
    "command": ["python", "-m", "pretrain.train", *train_args],
    "env": [{"name": "PRETRAIN_DISTRIBUTED", "value": "1"}],
    "resources": {"limits": {"google.com/tpu": chips_per_host}},
  }
  pod = {
    "spec": {
      "restartPolicy": "Never",
      "nodeSelector": {
        "cloud.google.com/gke-tpu-accelerator": tpu_type,
        "cloud.google.com/gke-tpu-topology": topology,
      },
      "terminationGracePeriodSeconds": 120,  # SIGTERM first: the trainer checkpoints and exits
      "containers": [container],
    }
  }
  return {
    "apiVersion": "jobset.x-k8s.io/v1alpha2",
    "kind": "JobSet",
    "metadata": {
      "name": name,
      "annotations": {
        "alpha.jobset.sigs.k8s.io/exclusive-topology": "cloud.google.com/gke-nodepool"
      },
    },
    "spec": {
      "failurePolicy": {"maxRestarts": 3},
      "replicatedJobs": [
        {
          "name": "workers",
          "replicas": 1,
          "template": {
            "spec": {"parallelism": hosts, "completions": hosts, "backoffLimit": 0, "template": pod}
          },
        }
      ],
    },
  }


def main(argv):
  if not FLAGS.image:
    raise app.UsageError("--image is required")
  shared_storage.require_bucket(argv[1:], "a GKE job's pods")
  text = json.dumps(
    manifest(
      FLAGS.name,
      FLAGS.image,
      FLAGS.tpu_type,
      FLAGS.topology,
      FLAGS.hosts,
      FLAGS.chips_per_host,
      argv[1:],
    ),
    indent=2,
  )
  apply = ["kubectl", "apply", "-f", "-"]
  if FLAGS.dry_run:
    print(text + "\n# apply with:\n" + shlex.join(apply))
    return
  sys.exit(subprocess.run(apply, input=text, text=True, check=False).returncode)


if __name__ == "__main__":
  define_flags()
  app.run(main)
