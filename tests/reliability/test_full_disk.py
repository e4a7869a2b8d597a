"""A full disk during a save: a clear one-line error, the earlier checkpoints intact, and the
run resumes once there is space again. The workdir is a small tmpfs (mounting needs root; the
test skips where it cannot mount)."""

import os
import subprocess
import sys

import pytest

from tests import helpers
from tests.helpers import xla_flags


@pytest.fixture
def small_disk(tmp_path):
  mount = tmp_path / "disk"
  mount.mkdir()
  made = subprocess.run(
    ["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", str(mount)],
    capture_output=True,
    text=True,
  )
  if made.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_during_a_save(small_disk, data_dir):
  workdir = small_disk / "run"
  cmd = [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    "--config.data.tokenizer.vocab_size=256",
    "--config.model.num_layers=2",
    "--config.model.d_model=32",
    "--config.model.num_heads=4",
    "--config.model.max_len=32",
    "--config.batch.seq_len=32",
    "--config.train.total_steps=40",
    "--config.train.log_every=5",
    "--config.train.eval_every=0",
    "--config.checkpoint.every=5",
    "--config.checkpoint.keep=100",
    "--config.train.peak_flops=1e12",
  ]
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  full = helpers.run_python(cmd, env)
  assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-3000:]
  line = full.stderr.strip().splitlines()[-1]  # (after what the libraries log as they fail)
  assert line == (
    f"error: no space left on the device of {workdir}; the checkpoints saved "
    "before are intact: free space and rerun the same command to resume"
  )
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] < 40
  verify = helpers.run_python(
    [sys.executable, "-m", "pretrain.checkpoints", f"--workdir={workdir}", "--verify"], env
  )
  assert verify.returncode == 0, verify.stdout + verify.stderr  # the earlier ones are intact

  subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
  resumed = helpers.run_python(cmd, env)
  assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
  assert f"resumed from step {saved[-1]} of 40" in resumed.stdout
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
