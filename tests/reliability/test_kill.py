"""kill -9 at any moment, restart until done: the final parameters and optimizer state are
bitwise those of a run that never stopped (dropout and gradient accumulation on, asynchronous
checkpoints), no partial checkpoint is ever restored, and nothing temporary is left behind.
A second trainer on the same workdir is refused, and the lock of a killed one is not stuck."""

import json
import os
import re
import signal
import sys

import jax
import numpy as np
import pytest

from configs import common, gpt
from pretrain.state import checkpointer
from pretrain.training.trainer import train_and_evaluate
from tests import helpers
from tests.helpers import xla_flags

STEPS = 60


OVERRIDES = helpers.TINY_GPT | {
  "model.dropout": 0.1,
  "batch.grad_accum": 2,
  "train.total_steps": STEPS,
  "train.log_every": 5,
  "checkpoint.every": 10,
  "checkpoint.async_save": True,
}


def _overrides(data_dir):
  return OVERRIDES | {"data.data_dir": data_dir}


def _command(workdir, data_dir):
  return [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
  ] + helpers.flags(_overrides(data_dir))


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))


def _trainer(cmd):
  return helpers.Running(cmd, _env())


def _state(workdir, step):
  ckpt = checkpointer.Checkpointer(str(workdir / "checkpoints"), read_only=True)
  state = ckpt.read_as_saved(step)
  ckpt.close()
  return jax.tree.map(np.asarray, state)


def _temporary(workdir):
  return [str(p) for p in (workdir / "checkpoints").rglob("*") if "tmp" in p.name]


@pytest.mark.slow
def test_kill_9_anywhere_then_restart_ends_bitwise_equal(tmp_path, data_dir):
  reference = tmp_path / "reference"  # the same run, never stopped, in this process
  config = common.apply_overrides(gpt.get_config("smoke"), _overrides(data_dir))
  train_and_evaluate(config, str(reference), devices=jax.devices()[:1])

  workdir = tmp_path / "killed"
  cmd = _command(workdir, data_dir)
  ckpts, metrics = workdir / "checkpoints", workdir / "metrics.jsonl"
  logged = lambda: metrics.exists() and metrics.stat().st_size > 0
  saving = lambda: ckpts.is_dir() and any("tmp" in p.name for p in ckpts.iterdir())
  final_save = lambda: ckpts.is_dir() and any(
    p.name.startswith(f"{STEPS}.") and "tmp" in p.name for p in ckpts.iterdir()
  )
  points = [  # when to interrupt, and how, in order
    (
      "compiling the first step",
      lambda t: any(l.startswith(("resumed", "initialised")) for l in t.lines),
      signal.SIGKILL,
    ),
    ("training", lambda t: logged(), signal.SIGKILL),
    ("writing a checkpoint", lambda t: saving(), signal.SIGKILL),
    ("training (preempted)", lambda t: logged(), signal.SIGTERM),
    ("writing a checkpoint (preempted)", lambda t: saving(), signal.SIGTERM),
    ("writing the final checkpoint", lambda t: final_save(), signal.SIGKILL),
  ]
  hit, resumed_from = [], []
  for name, when, sig in points:
    metrics.unlink(missing_ok=True)  # (each attempt's own log lines decide when)
    trainer = _trainer(cmd)
    if trainer.caught(lambda: when(trainer)):
      if name == "training":  # held still: a second trainer on its workdir is refused
        trainer.signal(signal.SIGSTOP)
        _second_is_refused(cmd)
      trainer.signal(sig)
      hit.append(name)
    out = trainer.finish()
    assert "warning: checkpoint" not in out  # a killed save is never taken for a checkpoint
    if sig == signal.SIGTERM and name in hit:  # a checkpoint at the current step, exit 0
      assert trainer.proc.returncode == 0 and "preempted: saved a checkpoint at step" in out, out
    resumed_from += [
      int(l.split()[3]) for l in out.splitlines() if l.startswith("resumed from step")
    ]
  assert len(hit) >= 5, hit  # the moments were caught (the run may end before the last)

  final = _trainer(cmd).finish()
  assert "warning: checkpoint" not in final
  assert resumed_from == sorted(resumed_from), resumed_from  # never back past a checkpoint
  assert not _temporary(workdir)
  assert max(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == STEPS
  # goodput, cumulative over the restarts: the steps a killed run did past its checkpoint count
  record = json.loads((workdir / "goodput.json").read_text())
  assert record["runs"] >= 4 and record["redone"] > 0 and record["step"] == STEPS
  [line] = [l for l in final.splitlines() if l.startswith("goodput ")]
  assert re.fullmatch(
    r"goodput \d+\.\d% of \d+ s over \d+ runs \(startup .*redone \d+\.\d%\)", line
  )
  ours, theirs = _state(workdir, STEPS), _state(reference, STEPS)
  equal = jax.tree.map(np.array_equal, ours, theirs)
  assert all(jax.tree.leaves(equal)), "the restarted run's final state differs"


def _second_is_refused(cmd):
  """Starts a second trainer on the running one's workdir: it must refuse, in one line."""
  second = helpers.run_python(cmd, _env())
  assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
  assert second.stderr.strip().splitlines() == [second.stderr.strip()]
  assert "another trainer is running in" in second.stderr
  return True
