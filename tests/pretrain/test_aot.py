"""Ahead-of-time check: compile for a mesh of fake devices without running anything."""
import os
import subprocess
import sys

import jax
import pytest

from configs import gpt
from pretrain import aot, sharding
from tests.conftest import REPO


def test_gpt2_xl_fsdp8_holds_an_eighth_of_the_state_per_device():
  config = gpt.get_config("xl")
  config.mesh.update(data=1, fsdp=8, tensor=1)
  config.batch.update(size=8)
  r = aot.analyse(config)
  assert r["params"] / 1e9 == pytest.approx(1.556, abs=0.001)
  assert r["state_bytes_total"] == pytest.approx(3 * 4 * 1.5576e9, rel=0.01)  # params + 2 moments
  assert r["state_bytes_per_device"] <= r["state_bytes_total"] / 8 * 1.05
  assert r["argument_bytes"] >= r["state_bytes_per_device"]
  assert r["temp_bytes"] > 0 and r["formula_flops_per_step"] > 0
  assert "fits" in aot.report(r, 80e9) and "does NOT fit" in aot.report(r, 1e9)


def test_fsdp_keeps_activations_batch_sharded():
  # Without activation constraints XLA kept activations sharded like the weights and the
  # batch whole: FSDP then needed ~6x the temporaries of data parallelism.
  def temps(**mesh):
    config = gpt.get_config("small")
    config.mesh.update(mesh)
    config.batch.update(size=16, seq_len=256)
    return aot.analyse(config)["temp_bytes"]
  assert temps(data=1, fsdp=8, tensor=1) <= 1.1 * temps(data=8, fsdp=1, tensor=1)


def test_mesh_errors_are_reported():
  config = gpt.get_config("smoke")
  config.mesh.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(sharding.MeshError, match="config.mesh"):
    aot.analyse(config)


@pytest.mark.slow
def test_command_line_on_fake_devices():
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "pretrain.aot", "--config=configs/gpt.py:medium", "--devices=4",
         "--config.mesh.fsdp=4", "--config.mesh.data=1", "--config.batch.size=4"]
  ok = subprocess.run(cmd + ["--memory_per_device=80e9"], cwd=REPO, env=env, capture_output=True,
                      text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr
  assert "on 4 devices" in ok.stdout and "fits in" in ok.stdout
  tight = subprocess.run(cmd + ["--memory_per_device=1e8"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
  assert tight.returncode == 3 and "does NOT fit" in tight.stdout
  assert len(jax.devices()) == 8  # this process's devices were not touched
