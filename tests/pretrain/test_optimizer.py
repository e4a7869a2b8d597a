"""config.optimizer: the optimizers (AdamW, Lion, Muon from optax) and the schedules
(cosine, linear, constant, warmup-stable-decay); Muon's orthogonalised updates of stacked and
sharded matrices, its exact resume, and a resume with another optimizer refused."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common, errors
from pretrain import checkpointing, optimizer, trainer
from tests.conftest import COMPILES

P = jax.sharding.PartitionSpec


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
    (dict(name="sgdd"), "config.optimizer.name: 'sgdd'; use one of 'adamw', 'lion', 'muon'"),
    (dict(schedule="wsd", decay_shape="cubic"), "config.optimizer.decay_shape: 'cubic'"),
    (dict(schedule="wsd", decay_fraction=0.0), "config.optimizer.decay_fraction: must be in"),
    (dict(schedule="wsd", decay_fraction=float("nan")), "config.optimizer.decay_fraction"),
])
def test_bad_optimizer_fields_are_refused_in_one_line(fields, message):
  with pytest.raises(errors.UserError, match=message.replace("(", r"\(")):
    optimizer.check(_opt(**fields))


@pytest.mark.parametrize("name,lr", [("lion", 2e-3)])  # (muon: below)
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


def test_muon_orthogonalises_each_hidden_matrix_of_a_stack():
  """A scanned stack of 3 layers: each layer's update of an embed x (heads, head_dim) and an
  mlp x embed matrix has singular values near one another (those of a random 32 x 128 matrix
  spread over a factor of 3); the embedding (vocab x embed) and a bias take AdamW."""
  logical = {"query": P("layers", "embed", "heads", "head_dim"), "proj": P("layers", "mlp", "embed"),
             "embedding": P("vocab", "embed"), "bias": P("layers", "embed")}
  dims = optimizer.muon_dimensions(logical)
  assert (dims["query"].reduction_axis, dims["query"].output_axis) == (1, (2, 3))
  assert (dims["proj"].reduction_axis, dims["proj"].output_axis) == ((1,), 2)
  assert dims["embedding"] is None and dims["bias"] is None
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  shapes = {"query": (3, 32, 4, 32), "proj": (3, 128, 32), "embedding": (100, 32), "bias": (3, 32)}
  params = {k: jax.random.normal(key, shape) for key, (k, shape) in zip(keys, shapes.items())}
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  tx, _ = optimizer.make(_opt(name="muon", schedule="constant", warmup_steps=0, grad_clip=0.0,
                              weight_decay=0.0, lr=1.0), 10, logical)
  updates, _ = tx.update(grads, tx.init(params), params)

  def spread(matrix):
    s = np.linalg.svd(np.asarray(matrix), compute_uv=False)
    return s.min() / s.max()

  for layer in range(3):
    assert spread(updates["query"][layer].reshape(32, 128)) > 0.6
    assert spread(updates["proj"][layer]) > 0.6
    assert spread(grads["proj"][layer]) < 0.45  # (what the gradient itself looks like)
  assert spread(updates["embedding"]) < 0.45  # AdamW's update: not orthogonalised
  assert jnp.all(jnp.isfinite(updates["bias"]))


def _train(tiny_config, workdir, devices=1, **overrides):
  config = tiny_config(**{"optimizer.name": "muon", "optimizer.lr": 1e-2, "train.log_every": 1,
                          **overrides})
  return trainer.train_and_evaluate(config, str(workdir),
                                    devices=jax.devices()[:devices] if devices else None)


def _params(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state["params"]))


def test_muon_trains_sharded_equals_one_device_and_resumes_exactly(tiny_config, tmp_path):
  one = _train(tiny_config, tmp_path / "one", **{"train.total_steps": 12})
  rows = [json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.5, losses
  sharded = _train(tiny_config, tmp_path / "sharded", devices=0, **{
      "train.total_steps": 12, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  # (atol: the key bias, whose gradient is rounding noise, moves by noise)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               _params(one), _params(sharded))
  # stopped at step 6 with Muon's momentum in the checkpoint, then resumed: bitwise the same
  _train(tiny_config, tmp_path / "split", **{"train.total_steps": 12, "train.stop_at_step": 6})
  resumed = _train(tiny_config, tmp_path / "split", **{"train.total_steps": 12})
  assert resumed.step == 12
  jax.tree.map(np.testing.assert_array_equal, _params(one), _params(resumed))
