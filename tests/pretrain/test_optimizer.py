"""config.optimizer: the optimizers (AdamW, Lion, Muon from optax) and the schedules
(cosine, linear, constant, warmup-stable-decay); Muon's orthogonalised updates of stacked and
sharded matrices, its exact resume, and a resume with another optimizer refused."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from pretrain.ground import errors
from pretrain.state import checkpointer
from pretrain.training import optimizer, steps, trainer
from tests.helpers import COMPILES

P = jax.sharding.PartitionSpec


def _opt(**fields):
  return ml_collections.ConfigDict(dict(common.optimizer_config().to_dict(), **fields))


def test_wsd_warms_up_holds_the_peak_then_cools_down_to_min_lr():
  opt = _opt(schedule="wsd", lr=1.0, min_lr=0.1, warmup_steps=10, decay_fraction=0.2)
  lr = optimizer.schedule(opt, 100)
  np.testing.assert_allclose(
    [lr(s) for s in (0, 5, 10, 50, 79, 80)], [0, 0.5, 1, 1, 1, 1], atol=1e-6
  )
  np.testing.assert_allclose([lr(90), lr(100)], [0.55, 0.1], atol=1e-6)  # linear cooldown
  sqrt = optimizer.schedule(_opt(**dict(opt, decay_shape="1-sqrt")), 100)
  # 1-sqrt: a quarter of the way through the cooldown, half of the drop is done (steeper
  # than linear at first)
  np.testing.assert_allclose([sqrt(80), sqrt(85), sqrt(100)], [1.0, 0.55, 0.1], atol=1e-6)
  assert float(sqrt(90)) < float(lr(90))
  # the other schedules are unchanged: cosine reaches min_lr at the end
  np.testing.assert_allclose(
    optimizer.schedule(_opt(lr=1.0, min_lr=0.1, warmup_steps=10), 100)(100), 0.1, atol=1e-6
  )


@pytest.mark.parametrize(
  "fields,message",
  [
    (
      dict(name="sgdd"),
      "config.optimizer.name: 'sgdd'; use one of 'adamw', 'lion', 'muon', 'adafactor'",
    ),
    (
      dict(lr_scale=dict(embed=-1.0)),
      "config.optimizer.lr_scale.embed: -1.0; the groups are "
      "embed, head, hidden, scalar, each a multiplier >= 0",
    ),
    (dict(schedule="wsd", decay_shape="cubic"), "config.optimizer.decay_shape: 'cubic'"),
    (dict(schedule="wsd", decay_fraction=0.0), "config.optimizer.decay_fraction: must be in"),
    (dict(schedule="wsd", decay_fraction=float("nan")), "config.optimizer.decay_fraction"),
  ],
)
def test_bad_optimizer_fields_are_refused_in_one_line(fields, message):
  with pytest.raises(errors.UserError, match=message.replace("(", r"\(")):
    optimizer.check(_opt(**fields))


@pytest.mark.slow
@pytest.mark.parametrize("name,lr", [("lion", 2e-3), ("adafactor", 1e-2)])  # (muon: below)
def test_each_optimizer_trains_with_falling_loss(tiny_config, tmp_path, name, lr):
  config = tiny_config(
    **{
      "optimizer.name": name,
      "optimizer.lr": lr,
      "optimizer.min_lr": lr / 10,
      "optimizer.schedule": "wsd",
      "optimizer.warmup_steps": 5,
      "train.total_steps": 30,
      "train.log_every": 10,
      "checkpoint.every": 15,
    }
  )
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.5, losses
  ckpt = checkpointer.Checkpointer(str(tmp_path / "checkpoints"), read_only=True)
  assert ckpt.meta(ckpt.latest_step())["optimizer"] == name
  ckpt.close()

  # Resuming with another optimizer (another state layout) is refused before compiling.
  COMPILES.clear()
  other = tiny_config(**{"optimizer.name": "adamw", "train.total_steps": 40})
  with pytest.raises(
    checkpointer.CheckpointError,
    match=f"config.optimizer.name: the checkpoint in .* holds '{name}' state, not 'adamw'",
  ):
    trainer.train_and_evaluate(other, str(tmp_path), devices=jax.devices()[:1])
  assert not COMPILES


def test_muon_orthogonalises_each_hidden_matrix_of_a_stack():
  """A scanned stack of 3 layers: each layer's update of an embed x (heads, head_dim) and an
  mlp x embed matrix has singular values near one another (those of a random 32 x 128 matrix
  spread over a factor of 3); the embedding (vocab x embed) and a bias take AdamW."""
  logical = {
    "query": P("layers", "embed", "heads", "head_dim"),
    "proj": P("layers", "mlp", "embed"),
    "embedding": P("vocab", "embed"),
    "bias": P("layers", "embed"),
  }
  dims = optimizer.muon_dimensions(logical)
  assert (dims["query"].reduction_axis, dims["query"].output_axis) == (1, (2, 3))
  assert (dims["proj"].reduction_axis, dims["proj"].output_axis) == ((1,), 2)
  assert dims["embedding"] is None and dims["bias"] is None
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  shapes = {"query": (3, 32, 4, 32), "proj": (3, 128, 32), "embedding": (100, 32), "bias": (3, 32)}
  params = {k: jax.random.normal(key, shape) for key, (k, shape) in zip(keys, shapes.items())}
  grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  tx, _ = optimizer.make(
    _opt(name="muon", schedule="constant", warmup_steps=0, grad_clip=0.0, weight_decay=0.0, lr=1.0),
    10,
    logical,
  )
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
  config = tiny_config(
    **{"optimizer.name": "muon", "optimizer.lr": 1e-2, "train.log_every": 1, **overrides}
  )
  return trainer.train_and_evaluate(
    config, str(workdir), devices=jax.devices()[:devices] if devices else None
  )


def _params(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state["params"]))


@pytest.mark.slow
def test_muon_trains_sharded_equals_one_device_and_resumes_exactly(tiny_config, tmp_path):
  one = _train(tiny_config, tmp_path / "one", **{"train.total_steps": 12})
  rows = [
    json.loads(line) for line in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
  ]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < losses[0] - 0.5, losses
  sharded = _train(
    tiny_config,
    tmp_path / "sharded",
    devices=0,
    **{"train.total_steps": 12, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2},
  )
  # (atol: the key bias, whose gradient is rounding noise, moves by noise)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
    _params(one),
    _params(sharded),
  )
  # stopped at step 6 with Muon's momentum in the checkpoint, then resumed: bitwise the same
  _train(tiny_config, tmp_path / "split", **{"train.total_steps": 12, "train.stop_at_step": 6})
  resumed = _train(tiny_config, tmp_path / "split", **{"train.total_steps": 12})
  assert resumed.step == 12
  jax.tree.map(np.testing.assert_array_equal, _params(one), _params(resumed))


def test_adafactor_keeps_row_and_column_statistics_of_large_matrices():
  """A stack of 2 layers of 256 x 512 matrices: per layer 256 + 512 second-moment entries and
  no momentum, against AdamW's 2 x 256 x 512; the statistics are replicated, the rest of the
  state shards like its parameter."""
  logical = {"fc": P("layers", "embed", "mlp"), "bias": P("layers", "mlp")}
  params = {"fc": jnp.ones((2, 256, 512)), "bias": jnp.ones((2, 512))}
  tx, _ = optimizer.make(_opt(name="adafactor", grad_clip=0.0), 10, logical)
  state = tx.init(params)
  sizes = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(state)}
  assert sum(np.prod(shape) for shape in sizes.values()) < 2 * 768 + 2 * 512 + 10
  assert (2, 256) in sizes.values() and (2, 512) in sizes.values()
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
  assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))
  mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"))
  rules = (("layers", None), ("embed", "fsdp"), ("mlp", "tensor"))
  abstract = {
    "params": jax.eval_shape(lambda: params),
    "opt_state": jax.eval_shape(tx.init, params),
  }
  shardings = steps.state_shardings(abstract, logical, mesh, rules)
  by_shape = {
    leaf.shape: sh.spec
    for leaf, sh in zip(
      jax.tree.leaves(abstract["opt_state"]), jax.tree.leaves(shardings["opt_state"])
    )
  }
  assert by_shape[(2, 256)] == P() and by_shape[(2, 512)] in (P(), P(None, "tensor"))


def test_lr_scale_multiplies_each_groups_update():
  """Embedding x0.5, head x2, hidden x3, scalars x0: each update is AdamW's times its group's
  multiplier (its decoupled weight decay included)."""
  logical = {
    "embed": P("vocab", "embed"),
    "head": P("embed", "vocab"),
    "fc": P("layers", "embed", "mlp"),
    "norm": P("embed"),
    "fc_bias": P("layers", "mlp"),
  }
  assert {k: optimizer.lr_group(v) for k, v in logical.items()} == dict(
    embed="embed", head="head", fc="hidden", norm="scalar", fc_bias="scalar"
  )
  shapes = {"embed": (10, 4), "head": (4, 10), "fc": (2, 4, 8), "norm": (4,), "fc_bias": (2, 8)}
  params = {
    k: jax.random.normal(jax.random.PRNGKey(i), s) for i, (k, s) in enumerate(shapes.items())
  }
  grads = jax.tree.map(lambda p: jnp.cos(p), params)
  plain = _opt(grad_clip=0.0, warmup_steps=0, schedule="constant")
  scaled = _opt(**dict(plain, lr_scale=dict(embed=0.5, head=2.0, hidden=3.0, scalar=0.0)))
  (tx_a, _), (tx_b, _) = optimizer.make(plain, 10, logical), optimizer.make(scaled, 10, logical)
  a, _ = tx_a.update(grads, tx_a.init(params), params)
  b, _ = tx_b.update(grads, tx_b.init(params), params)
  for key, factor in dict(embed=0.5, head=2.0, fc=3.0, norm=0.0, fc_bias=0.0).items():
    np.testing.assert_allclose(b[key], factor * a[key], rtol=1e-6, atol=1e-8)
