"""Gradient accumulation gives exactly the full batch's gradient, for GPT and BERT, on one
device and on 8. The optimizer here keeps the gradient it is given as its state, so the step's
gradient is read exactly (Adam's first step would hide a wrongly scaled gradient)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pretrain.devices import sharding
from pretrain.training import steps as steps_lib
from pretrain.training import trainer


def _gradient(config, devices, batch=None, rows_fn=None):
  """The gradient of one train step on the first batch (or `batch`), and the step's loss sums."""
  run = trainer.setup(config, jax.devices()[:devices])
  steps = run.build_steps()
  # keeps the last gradient as its state (and applies it as the update)
  tx = optax.GradientTransformation(
    lambda p: jax.tree.map(jnp.zeros_like, p), lambda g, state, params=None: (g, g)
  )
  state = steps.init()
  state = dict(state, opt_state=tx.init(state["params"]))
  step = jax.jit(
    functools.partial(
      steps_lib.train_step,
      graphdef=steps.graphdef,
      objective=run.objective,
      tx=tx,
      lr_fn=lambda s: 1.0,
      grad_accum=config.batch.grad_accum,
      micro_sharding=steps.data_sharding,
      rows_fn=rows_fn,
    )
  )
  batch = run.train_data.batch(0, run.rows) if batch is None else batch
  with sharding.context(steps.mesh, steps.rules):
    new, out = step(state, steps.to_global(batch))
  return jax.device_get(new["opt_state"]), jax.device_get(out)


def _assert_same(reference, other):
  (g0, out0), (g1, out1) = reference, other
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g0, g1)
  for key in out0:
    if key not in ("update_norm", "param_norm", "lr"):
      np.testing.assert_allclose(out0[key], out1[key], rtol=1e-5, err_msg=key)


MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gpt", "bert"])
def test_accumulation_gives_the_full_batch_gradient(model, tiny_config, tiny_bert):
  make = tiny_config if model == "gpt" else tiny_bert
  common = {"batch.size": 16, "model.dropout": 0.0}
  full = _gradient(make(**common), devices=1)
  _assert_same(full, _gradient(make(**common, **{"batch.grad_accum": 2}), devices=1))
  # 8 devices (data x fsdp x tensor), microbatches still spread over the batch axes
  _assert_same(full, _gradient(make(**common, **MESH, **{"batch.grad_accum": 4}), devices=8))


def test_a_batch_ramp_trains_on_its_first_microbatches_only(tiny_config):
  """Step 0 of a ramp from 4 of 16 rows (grad_accum 4) is exactly a step on microbatch 0's
  rows (global rows 0, 4, 8, 12) as a batch of their own: gradient, sums and means."""
  common = {"model.dropout": 0.0}
  ramp = tiny_config(
    **common,
    **{"batch.size": 16, "batch.grad_accum": 4, "batch.warmup_steps": 6, "batch.warmup_start": 4},
  )
  batch = trainer.setup(ramp, jax.devices()[:1]).train_data.batch(0, np.arange(16))
  rows_fn = steps_lib.batch_schedule(ramp.batch)
  assert [int(rows_fn(s)) for s in range(8)] == [4, 8, 8, 12, 12, 16, 16, 16]
  grads, out = _gradient(ramp, 1, batch=batch, rows_fn=rows_fn)
  assert out["batch_rows"] == 4 and out["tokens"] == 4 * ramp.batch.seq_len
  alone = _gradient(
    tiny_config(**common, **{"batch.size": 4}), 1, batch={k: v[0::4] for k, v in batch.items()}
  )
  _assert_same(alone, (grads, out))


@pytest.mark.slow
def test_a_run_ramps_its_batch_and_resumes_on_the_ramp(tiny_config, tmp_path):
  config = lambda **kw: tiny_config(
    **{
      "batch.size": 16,
      "batch.grad_accum": 4,
      "batch.warmup_steps": 6,
      "train.log_every": 1,
      "train.total_steps": 8,
      **kw,
    }
  )
  trainer.train_and_evaluate(
    config(**{"train.stop_at_step": 3}), str(tmp_path), devices=jax.devices()[:1]
  )
  trainer.train_and_evaluate(config(), str(tmp_path), devices=jax.devices()[:1])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  logged = {r["step"]: r for r in rows if "train/batch_size" in r}
  assert [logged[s]["train/batch_size"] for s in range(1, 9)] == [4, 8, 8, 12, 12, 16, 16, 16]
  assert logged[8]["train/tokens_seen"] == (4 + 8 + 8 + 12 + 12 + 16 + 16 + 16) * 32
