r"""Starts N processes of a command on this machine, wired together with jax.distributed.

  python -m launch.local --num_processes=2 --devices_per_process=4 -- \
      python -m pretrain.train --config=configs/gpt.py:smoke --workdir=runs/mp

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (read by
pretrain/devices/distributed.py). With --devices_per_process=D > 0 every process runs on D fake CPU
devices with gloo collectives (how the tests check multi-host code paths on a laptop); with
--gpus_per_process=G each process sees its own G GPUs (a multi-GPU box without a scheduler).
Output lines are prefixed with the process id; the launcher exits with the first non-zero
status. --dry_run prints the exact environment and command of each process and exits.
"""

import os
import shlex
import socket
import subprocess
import sys
import threading

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
  """Command-line flags, defined only when this module is the program (so that the launchers
  can be imported side by side, e.g. by tests)."""
  flags.DEFINE_integer("num_processes", 2, "Processes to start.")
  flags.DEFINE_integer("devices_per_process", 0, "Fake CPU devices per process (0: off).")
  flags.DEFINE_integer("gpus_per_process", 0, "GPUs per process (CUDA_VISIBLE_DEVICES).")
  flags.DEFINE_integer("port", 0, "Coordinator port on localhost (0: a free one).")
  flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_envs(num_processes, port, devices_per_process=0, gpus_per_process=0):
  """The environment variables that differ per process."""
  envs = []
  for i in range(num_processes):
    env = {
      "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
      "JAX_NUM_PROCESSES": str(num_processes),
      "JAX_PROCESS_ID": str(i),
    }
    if devices_per_process:  # (the environment's other XLA flags are kept)
      kept = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
      ]
      env.update(
        JAX_PLATFORMS="cpu",
        JAX_CPU_COLLECTIVES="gloo",
        XLA_FLAGS=" ".join(
          [f"--xla_force_host_platform_device_count={devices_per_process}"] + kept
        ),
      )
    if gpus_per_process:
      env["CUDA_VISIBLE_DEVICES"] = ",".join(
        str(g) for g in range(i * gpus_per_process, (i + 1) * gpus_per_process)
      )
    envs.append(env)
  return envs


def render(envs, command):
  return [
    " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(command)
    for env in envs
  ]


def _pump(i, stream, out):
  for line in iter(stream.readline, ""):
    out.write(f"[{i}] {line}")
    out.flush()


def run(envs, command):
  procs = [
    subprocess.Popen(
      command,
      env=dict(os.environ, **env),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for env in envs
  ]
  threads = [
    threading.Thread(target=_pump, args=(i, p.stdout, sys.stdout), daemon=True)
    for i, p in enumerate(procs)
  ]
  for t in threads:
    t.start()
  codes = [p.wait() for p in procs]
  for t in threads:
    t.join()
  return next((c for c in codes if c), 0)


def main(argv):
  command = argv[1:]
  if not command:
    raise app.UsageError("give the command after --, e.g. -- python -m pretrain.train ...")
  envs = process_envs(
    FLAGS.num_processes,
    FLAGS.port or free_port(),
    FLAGS.devices_per_process,
    FLAGS.gpus_per_process,
  )
  if FLAGS.dry_run:
    print("\n".join(render(envs, command)))
    return
  sys.exit(run(envs, command))


if __name__ == "__main__":
  define_flags()
  app.run(main)
