"""Gradient accumulation gives exactly the full batch's gradient, for GPT and BERT, on one
device and on 8. The optimizer here keeps the gradient it is given as its state, so the step's
gradient is read exactly (Adam's first step would hide a wrongly scaled gradient)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pretrain import sharding, steps as steps_lib, trainer


def _gradient(config, devices):
  """The gradient of one train step on the first batch, and the step's loss sums."""
  run = trainer.setup(config, jax.devices()[:devices])
  steps = run.build_steps()
  # keeps the last gradient as its state (and applies it as the update)
  tx = optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p),
                                    lambda g, state, params=None: (g, g))
  state = steps.init()
  state = dict(state, opt_state=tx.init(state["params"]))
  step = jax.jit(functools.partial(
      steps_lib.train_step, graphdef=steps.graphdef, objective=run.objective, tx=tx,
      lr_fn=lambda s: 1.0, grad_accum=config.batch.grad_accum, micro_sharding=steps.data_sharding))
  with sharding.context(steps.mesh, steps.rules):
    new, out = step(state, steps.to_global(run.train_data.batch(0, run.rows)))
  return jax.device_get(new["opt_state"]), jax.device_get(out)


def _assert_same(reference, other):
  (g0, out0), (g1, out1) = reference, other
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g0, g1)
  for key in out0:
    if key not in ("update_norm", "param_norm", "lr"):
      np.testing.assert_allclose(out0[key], out1[key], rtol=1e-5, err_msg=key)


MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


@pytest.mark.parametrize("model", ["gpt", "bert"])
def test_accumulation_gives_the_full_batch_gradient(model, tiny_config, tiny_bert):
  make = tiny_config if model == "gpt" else tiny_bert
  common = {"batch.size": 16, "model.dropout": 0.0}
  full = _gradient(make(**common), devices=1)
  _assert_same(full, _gradient(make(**common, **{"batch.grad_accum": 2}), devices=1))
  # 8 devices (data x fsdp x tensor), microbatches still spread over the batch axes
  _assert_same(full, _gradient(make(**common, **MESH, **{"batch.grad_accum": 4}), devices=8))
