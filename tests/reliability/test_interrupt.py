"""Signals during training: the loop keeps at most trainer.IN_FLIGHT steps ahead of the device,
so a SIGTERM or SIGINT is saved within two steps whatever train.log_every is; Ctrl-C saves and
exits 130, a second Ctrl-C stops at once without saving, and a resumed run supersedes the rows
and events an earlier run logged past its checkpoint."""

import json
import os
import signal
import sys
import time

import jax
import pytest

from pretrain.training import metrics, trainer
from pretrain.training import steps as steps_lib
from tests import helpers
from tests.helpers import tiny_gpt_config, xla_flags

DEVICE_STEP_S = 0.1  # the slowed device's time per step


def test_a_signal_is_saved_within_two_steps_of_a_slow_device(data_dir, tmp_path, monkeypatch):
  """The device is slowed (each step's state passes through a host callback that sleeps), the
  log cadence is longer than the run: the loop never runs more than IN_FLIGHT steps ahead of
  the device, so the checkpoint taken on SIGTERM waits for at most that many steps."""
  done, lead = [0], []
  signal_at = 12

  def sleep_then_count(x):
    time.sleep(DEVICE_STEP_S)
    done[0] += 1
    return x

  slow = jax.jit(
    lambda x: jax.pure_callback(sleep_then_count, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
  )
  train = steps_lib.Steps.train

  def slowed_train(self, state, batch):
    dispatched = len(lead)
    lead.append(dispatched - done[0])  # steps dispatched before this one, not yet run
    if dispatched == signal_at:
      os.kill(os.getpid(), signal.SIGTERM)
    state, out = train(self, state, batch)
    return dict(state, step=slow(state["step"])), out

  monkeypatch.setattr(steps_lib.Steps, "train", slowed_train)
  config = tiny_gpt_config(
    data_dir, **{"train.total_steps": 40, "train.log_every": 50, "checkpoint.every": 100}
  )
  result = trainer.train_and_evaluate(config, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert result.stopped_by == "SIGTERM" and result.step == signal_at + 1
  assert max(lead) <= trainer.IN_FLIGHT + 1, lead  # without the bound: up to log_every
  assert (tmp_path / "run" / "checkpoints" / str(signal_at + 1)).is_dir()


def test_read_rows_applies_the_resumed_marker(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [
    {"step": 5, "a": 1},
    {"step": 10, "a": 2},
    {"step": 15, "a": 3},
    {"step": 10, "resumed": 1},
    {"step": 15, "a": 4},
    {"step": 20, "a": 5},
  ]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert metrics.read_rows(str(path)) == [
    {"step": 5, "a": 1},
    {"step": 10, "a": 2},
    {"step": 15, "a": 4},
    {"step": 20, "a": 5},
  ]


# ----------------------------------------------------------------------------- real Ctrl-C


def _trainer(workdir, data_dir):
  """pretrain.train, slowed (tests/slowed_train.py: steps of ~0.4 s, long enough to send
  signals between them), on a tiny GPT in `workdir`, its output collected as it comes."""
  overrides = helpers.TINY_GPT | {
    "data.data_dir": data_dir,
    "train.total_steps": 20,
    "train.log_every": 5,
    "checkpoint.every": 10,
    "checkpoint.async_save": True,
  }
  cmd = [
    sys.executable,
    "-m",
    "tests.slowed_train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
  ] + helpers.flags(overrides)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))
  return helpers.Running(cmd, env)


def _tensorboard_steps(workdir):
  from tensorboard.backend.event_processing import event_accumulator

  acc = event_accumulator.EventAccumulator(str(workdir / "tensorboard"))
  acc.Reload()
  return [e.step for e in acc.Scalars("train/loss")]


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130_a_second_stops_at_once_and_resuming_supersedes(
  data_dir, tmp_path
):
  workdir = tmp_path / "run"
  first = _trainer(workdir, data_dir)  # Ctrl-C once: saved at the step it reached
  first.wait_for("step 5/20")
  first.proc.send_signal(signal.SIGINT)
  out = first.finish()
  assert first.proc.returncode == 130, out
  assert "Traceback" not in out and "interrupt: saving a checkpoint after this step" in out
  [line] = [l for l in out.splitlines() if l.startswith("interrupted:")]
  saved = int(line.split()[6].rstrip(";"))
  assert 5 <= saved <= 8 and (workdir / "checkpoints" / str(saved)).is_dir(), out

  second = _trainer(workdir, data_dir)  # Ctrl-C twice, past the checkpoint at 10: nothing saved
  second.wait_for("step 15/20")
  second.proc.send_signal(signal.SIGINT)
  second.wait_for("interrupt: saving")
  second.proc.send_signal(signal.SIGINT)
  out = second.finish()
  assert second.proc.returncode == 130, out
  assert "interrupted again: stopped at once; the current step is not saved" in out, out
  assert "Traceback" not in out
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
    saved,
    10,
  ]

  out = _trainer(workdir, data_dir).finish()  # resumed from 10: redoes 11-15 and goes on
  assert "resumed from step 10 of 20" in out, out
  rows = metrics.read_rows(str(workdir / "metrics.jsonl"))
  logged = [r["step"] for r in rows if "train/loss" in r]
  assert logged == [5, 10, 15, 20]  # 15 was logged twice; the first is superseded
  text = (workdir / "metrics.jsonl").read_text()
  assert text.count('"resumed": 1') == 2
  assert _tensorboard_steps(workdir) == logged  # purge_step: no step twice, no doubling back
