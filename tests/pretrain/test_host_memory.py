"""Host memory on CPU-only processes (pretrain/devices/host_memory.py): with
PRETRAIN_HOST_MALLOC=reuse, XLA's per-call temporary buffers are reused from one call to the
next instead of being faulted in again page by page."""

import json
import os
import subprocess
import sys

import jax
import pytest

from pretrain.devices import host_memory
from tests import helpers
from tests.helpers import REPO

_SETUP = """
import ctypes, os, resource, threading
from pretrain.devices import host_memory
configured = host_memory.configure()
if os.environ.get("BOUND"):  # a temporary buffer as large as the machine's memory
  assert host_memory.bound(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  assert not host_memory.configured() and not host_memory.bound(2**40)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
"""
# What XLA:CPU does at every call: a worker thread allocates the temporary buffer (here
# 128 MB) with posix_memalign, writes it and frees it. Printed: the page faults of calls 3-6.
_BLOCKS = (
  _SETUP
  + """
libc, size, counted = ctypes.CDLL("libc.so.6"), 128 << 20, []
def calls():
  for call in range(6):
    before, block = faults(), ctypes.c_void_p()
    assert libc.posix_memalign(ctypes.byref(block), 64, ctypes.c_size_t(size)) == 0
    ctypes.memset(block, 1, size)
    libc.free(block)
    counted.append(faults() - before if call >= 2 else 0)
worker = threading.Thread(target=calls)
worker.start()
worker.join()
print(configured, sum(counted))
"""
)
# A step like a train step: its state donated and updated, and temporary buffers of 128 MB
# (the 4096 x 4096 product and its cumulative sum). Printed: the page faults of calls 9-12.
_STEPS = (
  _SETUP
  + """
import jax, jax.numpy as jnp
step = jax.jit(lambda s, x: s + jnp.cumsum(x @ x.T, axis=0)[-1], donate_argnums=0)
x, s = jnp.ones((4096, 64), jnp.float32), jnp.zeros((4096,), jnp.float32)
for call in range(12):
  if call == 8:
    before = faults()
  s = step(s, x)
  s.block_until_ready()
print(configured, faults() - before)
"""
)


def _faults(script, choice, bound=False):
  """(configure()'s result, the faults the script counted) in a process of its own."""
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    PRETRAIN_HOST_MALLOC=choice,
    BOUND="1" if bound else "",
    XLA_FLAGS="",  # the real device, as in production
    PYTHONPATH=REPO,
  )
  argv = [sys.executable, "-c", script]
  out = subprocess.run(
    argv, env=env, capture_output=True, text=True, check=True, cwd=REPO
  ).stdout.split()
  return out[0] == "True", int(out[1])


glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's malloc only")


@pytest.mark.slow
@glibc_only
def test_xla_steps_reuse_their_temporary_buffers():
  configured, reused = _faults(_STEPS, "reuse")
  left_alone, mapped = _faults(_STEPS, "default")
  assert configured and not left_alone
  # glibc maps the 128 MB afresh at every call: 4 x 32k pages. Kept, they are reused; the
  # heap may still be settling (see pretrain/devices/host_memory.py), so fewer, not none.
  assert mapped >= 4 * 32768 and reused < mapped, (reused, mapped)


@glibc_only
def test_bound_maps_large_blocks_afresh_again():
  # A worker thread's posix_memalign of 128 MB, as XLA:CPU allocates its buffers: where three
  # such buffers would take over half the memory, blocks over 32 MB are mapped afresh at every
  # call again, as by default.
  configured, bounded = _faults(_BLOCKS, "reuse", bound=True)
  assert configured and bounded >= 4 * 32768, bounded


def test_small_temporary_buffers_stay_reused():
  assert not host_memory.bound(1 << 20)  # not configured in this process: nothing to undo


def test_bad_setting_is_one_line_naming_the_variable(monkeypatch):
  monkeypatch.setenv(host_memory.ENV, "yes")
  with pytest.raises(ValueError, match="PRETRAIN_HOST_MALLOC='yes'.*'default'.*'reuse'"):
    host_memory.configure()


def test_bad_setting_stops_an_entry_point_in_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PRETRAIN_HOST_MALLOC="yes")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "pretrain.train",
      "--config=configs/gpt.py:smoke",
      f"--workdir={tmp_path / 'run'}",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
    "error: PRETRAIN_HOST_MALLOC='yes': set it to 'default' (glibc's own settings) or "
    "'reuse' (freed host memory kept for reuse on CPU)"
  ], proc.stderr
  assert not (tmp_path / "run").exists()


def test_reuse_off_unless_asked_for(monkeypatch):
  monkeypatch.delenv(host_memory.ENV, raising=False)
  assert not host_memory.configure() and not host_memory.configured()


def test_jax_platforms_decides_whether_an_accelerator_may_be_used(monkeypatch):
  for platforms, accelerator in (("cpu", False), ("cuda,cpu", True), ("tpu", True)):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.accelerator_installed() == accelerator


@pytest.mark.slow
@glibc_only
def test_a_trainer_with_reuse_trains_the_same_run(data_dir, tmp_path):
  """`pretrain.train` with PRETRAIN_HOST_MALLOC=reuse checks its first step's temporary
  buffer against the machine's memory (a small one: kept for reuse) and trains the same
  run, bitwise, as one without it."""
  from pretrain.training import trainer
  from tests.helpers import xla_flags

  overrides = {"train.total_steps": 4, "train.log_every": 1, "checkpoint.every": 0}
  reference = trainer.train_and_evaluate(
    helpers.tiny_gpt_config(data_dir, **overrides),
    str(tmp_path / "default"),
    devices=jax.devices()[:1],
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1), PRETRAIN_HOST_MALLOC="reuse")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "pretrain.train",
      "--config=configs/gpt.py:smoke",
      f"--workdir={tmp_path / 'reuse'}",
    ]
    + helpers.flags(helpers.TINY_GPT | {"data.data_dir": data_dir} | overrides),
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "host memory:" not in proc.stdout  # a small buffer stays reused
  losses = [
    json.loads(line).get("train/loss")
    for line in (tmp_path / "reuse" / "metrics.jsonl").read_text().splitlines()
  ]
  assert [l for l in losses if l is not None] == [
    json.loads(line)["train/loss"]
    for line in (tmp_path / "default" / "metrics.jsonl").read_text().splitlines()
    if "train/loss" in json.loads(line)
  ]
  assert reference.step == 4
