"""A non-finite loss or gradient, injected at a given step (config.train.inject_nan_at_step),
follows config.train.nan_policy: 'stop' names the step and the checkpoint to resume from and
saves nothing non-finite; 'skip' leaves the state as it was and counts the step."""
import json

import jax
import numpy as np
import pytest

from pretrain.state import checkpointing
from pretrain.training import trainer


def _config(tiny_config, **kw):
  return tiny_config(**{"train.total_steps": 8, "train.log_every": 3, "checkpoint.every": 2,
                        "train.inject_nan_at_step": 5, **kw})


def test_stop_names_the_step_and_saves_nothing_after_it(tiny_config, tmp_path):
  with pytest.raises(FloatingPointError, match=(
      r"^loss or gradients not finite at step 5; the last checkpoint is step 4 in .*checkpoints: "
      r"rerun the same command to resume from it .*nan_policy='skip'$")):
    trainer.train_and_evaluate(_config(tiny_config), str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert ckpt.all_steps() == [2, 4]
  ckpt.close()


def test_skip_leaves_the_state_as_it_was_and_counts_it(tiny_config, tmp_path):
  config = _config(tiny_config, **{"train.nan_policy": "skip", "train.total_steps": 5})
  before = trainer.train_and_evaluate(
      _config(tiny_config, **{"train.nan_policy": "skip", "train.total_steps": 5,
                              "train.stop_at_step": 4}), str(tmp_path))
  skipped = trainer.train_and_evaluate(config, str(tmp_path))  # resumes: step 5, poisoned
  assert int(before.state["step"]) == 4 and int(skipped.state["step"]) == 5  # data moved on
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)),
                      (skipped.state["params"], skipped.state["opt_state"]),
                      (before.state["params"], before.state["opt_state"]))
  assert all(jax.tree.leaves(same))
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  counts = [r["train/skipped"] for r in rows if "train/skipped" in r]
  assert sum(counts) == 1 and all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
