"""A non-finite loss or gradient at a given step follows config.train.nan_policy: 'stop' names
the step and the checkpoint to resume from and saves nothing non-finite; 'skip' leaves the
state as it was and counts the step. The fault comes in through a seam the tests own: the
objective's loss, wrapped to be multiplied by a batch key that is NaN at one step."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from pretrain.objectives import registry
from pretrain.state import checkpointer
from pretrain.training import data, trainer

POISONED_STEP = 5


class _Poisoned:
  """A train loader whose batches carry 'poison': NaN at POISONED_STEP, else 1."""

  def __init__(self, loader):
    self.loader = loader

  def __getattr__(self, name):
    return getattr(self.loader, name)

  def batch(self, step, rows):
    poison = np.nan if step + 1 == POISONED_STEP else 1.0
    return dict(self.loader.batch(step, rows), poison=np.full(len(rows), poison, np.float32))


@pytest.fixture(name="poisoned")
def fixture_poisoned(monkeypatch):
  get, load_data = registry.get, data.load_data

  def poisoned_objective(name):
    objective = get(name)

    def loss(model, batch, dropout_key, denominators):
      value, sums = objective.loss(model, batch, dropout_key, denominators)
      p = batch["poison"][0] if "poison" in batch else 1.0  # (evaluation's batches: none)
      return value * p, {k: v * p for k, v in sums.items()}

    return dataclasses.replace(objective, loss=loss)

  def poisoned_data(*args, **kwargs):
    tok, train_data, val_data, notes = load_data(*args, **kwargs)
    return tok, _Poisoned(train_data), val_data, notes

  monkeypatch.setattr(registry, "get", poisoned_objective)
  monkeypatch.setattr(data, "load_data", poisoned_data)


def _config(tiny_config, **kw):
  return tiny_config(**{"train.total_steps": 8, "train.log_every": 3, "checkpoint.every": 2, **kw})


def test_stop_names_the_step_and_saves_nothing_after_it(tiny_config, tmp_path, poisoned):
  with pytest.raises(
    FloatingPointError,
    match=(
      r"^loss or gradients not finite at step 5; the last checkpoint is step 4 in .*checkpoints: "
      r"rerun the same command to resume from it .*nan_policy='skip'$"
    ),
  ):
    trainer.train_and_evaluate(_config(tiny_config), str(tmp_path))
  ckpt = checkpointer.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert ckpt.all_steps() == [2, 4]
  ckpt.close()


def test_skip_leaves_the_state_as_it_was_and_counts_it(tiny_config, tmp_path, poisoned):
  config = _config(tiny_config, **{"train.nan_policy": "skip", "train.total_steps": 5})
  before = trainer.train_and_evaluate(
    _config(
      tiny_config, **{"train.nan_policy": "skip", "train.total_steps": 5, "train.stop_at_step": 4}
    ),
    str(tmp_path),
  )
  skipped = trainer.train_and_evaluate(config, str(tmp_path))  # resumes: step 5, poisoned
  assert int(before.state["step"]) == 4 and int(skipped.state["step"]) == 5  # data moved on
  same = jax.tree.map(
    lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
    (skipped.state["params"], skipped.state["opt_state"]),
    (before.state["params"], before.state["opt_state"]),
  )
  assert all(jax.tree.leaves(same))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  counts = [r["train/skipped"] for r in rows if "train/skipped" in r]
  assert sum(counts) == 1 and all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
