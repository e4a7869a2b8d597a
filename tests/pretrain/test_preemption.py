"""SIGTERM (preemption) saves a checkpoint at the current step, exits 0, and the run resumes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_sigterm_leaves_a_resumable_checkpoint(tmp_path, data_dir):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  workdir = tmp_path / "run"
  cmd = [sys.executable, "-m", "pretrain.train", "--config=configs/gpt.py:smoke",
         f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
         "--config.train.total_steps=100000", "--config.train.log_every=5",
         "--config.train.eval_every=0", "--config.checkpoint.every=0"]
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().strip()):
    assert proc.poll() is None and time.time() < deadline, proc.communicate()
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert "preempted: saved a checkpoint at step" in out
  steps = [int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()]
  assert len(steps) == 1 and steps[0] >= 5  # checkpoint.every=0: only the preemption save

  resumed = subprocess.run(cmd + [f"--config.train.stop_at_step={steps[0] + 5}"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=120)
  assert resumed.returncode == 0, resumed.stderr
  logged = [json.loads(l)["step"] for l in metrics.read_text().splitlines()]
  assert logged[-1] == steps[0] + 5 and sorted(logged) == logged
