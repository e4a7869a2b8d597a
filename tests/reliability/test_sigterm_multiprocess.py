"""SIGTERM to one of 2 jax.distributed processes: JAX's preemption service agrees on a step,
both processes checkpoint it and exit 0, and the run resumes from there."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO


def _children(pid):
  with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as f:
    return [int(c) for c in f.read().split()]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path, data_dir):
  workdir = tmp_path / "run"
  cmd = [
    sys.executable,
    "-m",
    "launch.local",
    "--num_processes=2",
    "--devices_per_process=2",
    "--",
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.data.tokenizer.vocab_size=256",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.max_len=32",
    "--config.batch.seq_len=32",
    "--config.train.total_steps=100000",
    "--config.train.log_every=5",
    "--config.train.eval_every=0",
    "--config.checkpoint.every=0",
    "--config.train.peak_flops=1e12",
  ]
  launcher = subprocess.Popen(
    cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().strip()):
    assert launcher.poll() is None and time.time() < deadline, launcher.communicate()[0][-3000:]
    time.sleep(0.2)
  _, second = _children(launcher.pid)
  os.kill(second, signal.SIGTERM)  # process 1 only
  out = launcher.communicate(timeout=120)[0]
  assert launcher.returncode == 0, out[-3000:]
  [line] = [l for l in out.splitlines() if "preempted: saved a checkpoint at step" in l]
  assert line.startswith("[0] ")  # process 0 logs; both took part in the save
  step = int(line.split("at step ")[1].split(";")[0])
  saved = [p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
  assert saved == [str(step)]
  resumed = subprocess.run(
    cmd + [f"--config.train.stop_at_step={step + 5}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=240,
  )
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert f"[0] resumed from step {step} of 100000" in resumed.stdout
