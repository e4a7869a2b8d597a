"""config.optimizer: the optimizers (AdamW, Lion from optax) and the schedules
(cosine, linear, constant, warmup-stable-decay), and a resume with another optimizer refused."""
import json

import jax
import ml_collections
import numpy as np
import pytest

from configs import common, errors
from pretrain import checkpointing, optimizer, trainer
from tests.conftest import COMPILES


def _opt(**fields):
  return ml_collections.ConfigDict(dict(common.optimizer_config().to_dict(), **fields))


def test_wsd_warms_up_holds_the_peak_then_cools_down_to_min_lr():
  opt = _opt(schedule="wsd", lr=1.0, min_lr=0.1, warmup_steps=10, decay_fraction=0.2)
  lr = optimizer.schedule(opt, 100)
  np.testing.assert_allclose([lr(s) for s in (0, 5, 10, 50, 79, 80)], [0, 0.5, 1, 1, 1, 1],
                             atol=1e-6)
  np.testing.assert_allclose([lr(90), lr(100)], [0.55, 0.1], atol=1e-6)  # linear cooldown
  sqrt = optimizer.schedule(_opt(**dict(opt, decay_shape="1-sqrt")), 100)
  # 1-sqrt: a quarter of the way through the cooldown, half of the drop is done (steeper
  # than linear at first)
  np.testing.assert_allclose([sqrt(80), sqrt(85), sqrt(100)], [1.0, 0.55, 0.1], atol=1e-6)
  assert float(sqrt(90)) < float(lr(90))
  # the other schedules are unchanged: cosine reaches min_lr at the end
  np.testing.assert_allclose(optimizer.schedule(_opt(lr=1.0, min_lr=0.1, warmup_steps=10), 100)(100),
                             0.1, atol=1e-6)


@pytest.mark.parametrize("fields,message", [
    (dict(name="sgdd"), "config.optimizer.name: 'sgdd'; use one of 'adamw', 'lion'"),
    (dict(schedule="wsd", decay_shape="cubic"), "config.optimizer.decay_shape: 'cubic'"),
    (dict(schedule="wsd", decay_fraction=0.0), "config.optimizer.decay_fraction: must be in"),
    (dict(schedule="wsd", decay_fraction=float("nan")), "config.optimizer.decay_fraction"),
])
def test_bad_optimizer_fields_are_refused_in_one_line(fields, message):
  with pytest.raises(errors.UserError, match=message.replace("(", r"\(")):
    optimizer.check(_opt(**fields))


@pytest.mark.parametrize("name,lr", [("lion", 2e-3)])
def test_each_optimizer_trains_with_falling_loss(tiny_config, tmp_path, name, lr):
  config = tiny_config(**{"optimizer.name": name, "optimizer.lr": lr, "optimizer.min_lr": lr / 10,
                          "optimizer.schedule": "wsd", "optimizer.warmup_steps": 5,
                          "train.total_steps": 30, "train.log_every": 10})
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.5, losses
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert ckpt.meta(ckpt.latest_step())["optimizer"] == name
  ckpt.close()

  # Resuming with another optimizer (another state layout) is refused before compiling.
  COMPILES.clear()
  other = tiny_config(**{"optimizer.name": "adamw", "train.total_steps": 40})
  with pytest.raises(checkpointing.CheckpointError,
                     match=f"config.optimizer.name: the checkpoint in .* holds '{name}' state, "
                           "not 'adamw'"):
    trainer.train_and_evaluate(other, str(tmp_path), devices=jax.devices()[:1])
  assert not COMPILES
