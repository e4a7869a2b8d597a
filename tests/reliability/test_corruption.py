"""Damaged checkpoints: flipped bytes, a truncated file, a deleted file and an empty step
directory in the latest checkpoint are each detected, reported in one line, set aside (never
deleted) and fallen back from; with none usable the run stops and moves nothing."""

import os
import shutil
import sys

import pytest

from pretrain.state import checkpointer
from pretrain.training import trainer
from tests import helpers
from tests.helpers import tiny_gpt_config, xla_flags

MODES = ("flipped", "truncated", "deleted", "emptied")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
  """A finished 6-step run with asynchronous checkpoints at steps 2, 4 and 6."""
  workdir = tmp_path_factory.mktemp("corruption") / "run"
  trainer.train_and_evaluate(_config(data_dir, 6), str(workdir))
  return workdir


def _config(data_dir, steps):
  return tiny_gpt_config(
    data_dir, **{"train.total_steps": steps, "checkpoint.every": 2, "checkpoint.async_save": True}
  )


def damage(step_dir, mode):
  """Damages one checkpoint step directory as a failing disk or a careless hand would."""
  if mode == "emptied":
    for entry in step_dir.iterdir():
      shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return
  # every data file: a step's files can hold bytes no restore reads (superseded B-tree nodes)
  for path in (step_dir / "state").glob("ocdbt.process_*/d/*"):
    if mode == "deleted":
      os.remove(path)
    elif mode == "truncated":
      _rewrite(path, lambda data: data[: len(data) // 2])
    else:  # 64 bytes flipped at 16 places
      _rewrite(path, _flip)


def _flip(data):
  for k in range(16):
    at = len(data) * (2 * k + 1) // 32
    data[at : at + 64] = bytes(b ^ 0xFF for b in data[at : at + 64])
  return data


def _rewrite(path, change):
  data = change(bytearray(open(path, "rb").read()))
  with open(path, "wb") as f:
    f.write(data)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_a_damaged_latest_checkpoint_is_set_aside_and_fallen_back_from(
  run, tmp_path, data_dir, mode, capsys
):
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  damage(workdir / "checkpoints" / "6", mode)
  capsys.readouterr()
  result = trainer.train_and_evaluate(_config(data_dir, 8), str(workdir))
  out = capsys.readouterr().out
  warnings = [l for l in out.splitlines() if l.startswith("warning: checkpoint step 6")]
  assert len(warnings) == 1, out
  assert "is unusable (" in warnings[0] and warnings[0].endswith("resuming from step 4")
  assert "resumed from step 4 of 8" in out
  assert result.step == 8
  # kept for inspection, out of the way of the new step-6 save
  assert (workdir / "checkpoints-corrupt" / "6").is_dir()
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
    4,
    6,
    8,
  ]


@pytest.mark.slow
def test_no_usable_checkpoint_stops_and_moves_nothing(run, tmp_path, data_dir):
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  for step, mode in zip((2, 4, 6), MODES):
    damage(workdir / "checkpoints" / str(step), mode)
  before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
  with pytest.raises(
    checkpointer.CheckpointError,
    match=r"no usable checkpoint in .*checkpoints \(step 6: .*step 4: .*step 2: "
    r".*\); nothing was moved or deleted",
  ):
    trainer.train_and_evaluate(_config(data_dir, 8), str(workdir))
  assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before


@pytest.mark.slow
def test_verify_lists_and_checks_every_checkpoint(run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  env = dict(os.environ, XLA_FLAGS=xla_flags(1))
  cmd = [sys.executable, "-m", "pretrain.checkpoints", f"--workdir={workdir}", "--verify"]
  good = helpers.run_python(cmd, env)
  assert good.returncode == 0, good.stderr
  lines = good.stdout.splitlines()
  assert lines[0].split() == ["step", "saved", "size", "model"]
  for k, step in enumerate((2, 4, 6)):
    row = lines[1 + 2 * k].split()
    assert row[0] == str(step) and row[4] == "MiB" and "2 layers x 32" in lines[1 + 2 * k]
    assert (
      lines[2 + 2 * k].strip() == "ok: complete, checksums match, finite, agrees with config.json"
    )
  damage(workdir / "checkpoints" / "4", "flipped")
  bad = helpers.run_python(cmd, env)
  assert bad.returncode == 1
  lines = bad.stdout.splitlines()
  assert lines[4].strip().startswith(("checksum mismatch in ", "unreadable: "))
  assert lines[2].strip().startswith("ok") and lines[6].strip().startswith("ok")
  assert lines[-1].startswith("1 bad checkpoint(s)")
  # without --verify: the listing only
  listing = helpers.run_python(cmd[:-1], env)
  assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 4


def test_arrays_that_differ_from_their_checksums_are_refused(run):
  """What flipped bits inside an array's data amount to once decompressed: values that differ
  from those saved. (Which of a file's bytes hold array data varies from save to save.)"""
  import jax
  import numpy as np

  from pretrain.state import checksums

  ckpt = checkpointer.Checkpointer(str(run / "checkpoints"), read_only=True)
  state = ckpt.verified(6, lambda: ckpt.read_as_saved(6))  # whole: it passes
  kernel = np.array(state["params"]["blocks"]["mlp"]["fc"]["kernel"])
  for change in ("flip", "swap"):
    bad = kernel.copy()
    if change == "flip":
      bad.view(np.uint32)[0, 3, 5] ^= 1 << 7  # one bit of one element
    else:
      bad[0, [3, 4], 5] = bad[0, [4, 3], 5]  # two elements trade places
    altered = jax.tree.map(lambda x: x, state)
    altered["params"]["blocks"]["mlp"]["fc"]["kernel"] = bad
    with pytest.raises(
      checkpointer.CorruptCheckpoint, match=r"checksum mismatch in params/blocks/mlp/fc/kernel\)"
    ):
      ckpt.verified(6, lambda: altered)
  assert checksums.mismatches(state, ckpt.meta(6)["checksums"]) == []
  ckpt.close()
