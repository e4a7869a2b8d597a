"""The compiled pieces of a run: sharded state init and the jitted train and eval steps.

`train_step(state, batch) -> (state, metric sums)` and `eval_step(params, batch) -> metric sums`
are pure module-level functions; the model, objective and optimizer are bound with
functools.partial and jitted with explicit shardings (the state donated). The trainer, the
evaluator, the AOT memory check and the benchmarks all build them through `build_steps`.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from models import model_config
from pretrain.devices import sharding
from pretrain.objectives.objective import Objective, abstract_split
from pretrain.training import optimizer


def batch_schedule(b):
  """The rows of the global batch each step trains on, an optax schedule of the step: a linear
  ramp from b.warmup_start rows (0: one microbatch) to b.size over b.warmup_steps, rounded up to
  whole microbatches; None without a ramp (config.batch.warmup_steps = 0)."""
  if not b.get("warmup_steps"):
    return None
  micro = b.size // b.grad_accum
  ramp = optax.linear_schedule(b.warmup_start or micro, b.size, b.warmup_steps)
  return lambda step: jnp.minimum(b.size, jnp.ceil(ramp(step) / micro) * micro).astype(jnp.int32)


def rows_seen(b, step):
  """Sequences trained on before `step` (fewer than step * size during a batch-size ramp)."""
  rows = batch_schedule(b)
  if rows is None or step <= 0:
    return step * b.size
  ramp = min(step, b.warmup_steps)
  return int(jnp.sum(rows(jnp.arange(ramp)))) + (step - ramp) * b.size


def _gradients(params, batch, rng, step, graphdef, objective, grad_accum, micro_sharding,
               rows_fn):  # fmt: skip
  """(gradients, metric sums, denominators) of one step's batch, accumulated over its
  `grad_accum` microbatches (only those a batch-size ramp uses), exactly the full batch's."""
  # Row i of microbatch k is global row i * grad_accum + k: every microbatch stays spread over
  # all data-parallel devices.
  micro = (
    None
    if grad_accum == 1
    else jax.tree.map(lambda x: x.reshape(-1, grad_accum, *x.shape[1:]).swapaxes(0, 1), batch)
  )
  used = None  # microbatches this step trains on (all of them without a batch-size ramp)
  if rows_fn is None:
    denominators = objective.denominators(batch)  # of the whole batch: exact accumulation
  else:  # (a ramp has microbatches: config_checks)
    micro_rows = jax.tree.leaves(batch)[0].shape[0] // grad_accum
    used = jnp.clip(rows_fn(step) // micro_rows, 1, grad_accum)
    counted = jnp.arange(grad_accum) < used
    denominators = jax.tree.map(  # the counts are sums: those of the microbatches used
      lambda d: jnp.sum(jnp.where(counted, d, 0)), jax.vmap(objective.denominators)(micro)
    )

  def loss_fn(p, micro, key):
    return objective.loss(nnx.merge(graphdef, p), micro, key, denominators)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if grad_accum == 1:
    grads, sums = grad_fn(params, batch, rng)
  else:
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(
      lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(grad_fn, params, first, rng)
    )

    def body(carry, xs):
      mb, k = xs
      mb = jax.lax.with_sharding_constraint(mb, micro_sharding)
      run = lambda: grad_fn(params, mb, jax.random.fold_in(rng, k))
      g, s = run() if used is None else jax.lax.cond(k < used, run, lambda: zeros)
      return jax.tree.map(jnp.add, carry, (g, s)), None

    (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
  if used is not None:
    sums = dict(sums, batch_rows=(used * micro_rows).astype(jnp.float32))
  return grads, sums, denominators


def train_step(
  state,
  batch,
  *,
  graphdef,
  objective,
  tx,
  lr_fn,
  grad_accum,
  micro_sharding,
  nan_policy="stop",
  rows_fn=None,
):
  """One optimizer update over `grad_accum` microbatches; returns (state, metric sums).

  With a batch-size ramp (`rows_fn`, batch_schedule's), only the first rows_fn(step) rows of
  the batch count, a whole number of microbatches: the others are not computed (lax.cond) and
  the means divide by the rows used ('batch_rows' in the sums).

  'nonfinite' in the sums is 1 when the loss or the gradients are not finite. With nan_policy
  'skip' such an update is not applied (parameters and optimizer state stay as they were) and
  its sums are zeroed; with 'stop' the trainer stops before that state is saved."""
  params = state["params"]
  rng = jax.random.fold_in(state["rng"], state["step"])
  grads, sums, denominators = _gradients(
    params, batch, rng, state["step"], graphdef, objective, grad_accum, micro_sharding, rows_fn
  )
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(grad_norm) & jnp.all(
    jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(sums)])
  )
  updates, opt_state = tx.update(grads, state["opt_state"], params)
  new_params = optax.apply_updates(params, updates)
  if nan_policy == "skip":
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_params, opt_state = keep(new_params, params), keep(opt_state, state["opt_state"])
    sums, denominators = jax.tree.map(
      lambda v: jnp.where(finite, v, jnp.zeros_like(v)), (sums, denominators)
    )
  out = dict(
    sums,
    **denominators,
    grad_norm=grad_norm,
    update_norm=optax.tree.norm(updates),
    param_norm=optax.tree.norm(new_params),
    lr=lr_fn(state["step"]),
    nonfinite=1 - finite.astype(jnp.int32),
  )
  new_state = dict(step=state["step"] + 1, params=new_params, opt_state=opt_state, rng=state["rng"])
  return new_state, out


def eval_step(params, batch, *, graphdef, objective):
  """(sums and denominators, predictions per row) of one evaluation batch (no dropout); the
  predictions are empty but for fine-tuning tasks, which score them on the host."""
  denominators = objective.denominators(batch)
  model = nnx.merge(graphdef, params)
  if objective.evaluate is not None:
    sums, predictions = objective.evaluate(model, batch, denominators)
  else:
    (_, sums), predictions = objective.loss(model, batch, None, denominators), {}
  return dict(sums, **denominators), predictions


def init_params(objective: Objective, model_cfg: model_config.ModelConfig, key: jax.Array) -> dict:
  """A freshly initialised parameter tree (a pure dict)."""
  model = objective.make_model(model_cfg, nnx.Rngs(params=key))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def init_state(
  key: jax.Array,
  *,
  objective: Objective,
  model_cfg: model_config.ModelConfig,
  tx: optax.GradientTransformation,
) -> dict:
  params_key, _ = jax.random.split(key)
  return state_of(init_params(objective, model_cfg, params_key), tx, key)


def state_of(params: dict, tx: optax.GradientTransformation, key: jax.Array) -> dict:
  """The step-0 train state holding `params`, its RNG derived from `key` as init_state's."""
  _, rng = jax.random.split(key)
  return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)


def state_shardings(abstract_state, logical_specs, mesh, rules):
  """Params by their logical names; an optimizer state leaf like the parameter it tracks (one
  whose key path ends its own, of the same shape: AdamW's moments, Muon's momentum, inside
  whatever containers the optimizer keeps them); the rest (counts) replicated."""
  params = sharding.tree_shardings(logical_specs, mesh, rules)
  rep = sharding.replicated(mesh)
  shapes = {
    path: leaf.shape
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state["params"])[0]
  }
  by_path = dict(jax.tree_util.tree_flatten_with_path(params)[0])

  def like_its_param(path, leaf):
    for k in range(len(path)):
      if shapes.get(path[k:]) == leaf.shape:
        return by_path[path[k:]]
    return rep

  opt = jax.tree_util.tree_map_with_path(like_its_param, abstract_state["opt_state"])
  return dict(step=rep, params=params, opt_state=opt, rng=rep)


def model_logical_specs(
  objective: Objective, model_cfg: model_config.ModelConfig
) -> tuple[nnx.GraphDef, dict]:
  graphdef, params = abstract_split(objective, model_cfg, nnx.Param)
  return graphdef, nnx.to_pure_dict(nnx.get_partition_spec(params))


@dataclasses.dataclass
class Steps:
  """Everything compiled for one model on one mesh (the trainer, AOT check and benchmarks)."""

  graphdef: Any
  abstract_state: Any  # ShapeDtypeStructs carrying their shardings
  state_shardings: Any
  data_sharding: dict  # batch key -> NamedSharding
  train_jit: Any  # jitted train_step (lower it under `sharding.context(mesh, rules)`)
  eval_jit: Any
  init: Callable  # () -> a freshly initialised, sharded state
  mesh: Any
  rules: Any

  def train(self, state, batch):
    with sharding.context(self.mesh, self.rules):  # for activation constraints in the model
      out = self.train_jit(state, batch)
    if self.mesh.size > 1 and jax.default_backend() == "cpu":
      # XLA:CPU's collectives deadlock when steps pile up in flight: between processes (gloo)
      # at two steps, between the devices of one process (--xla_force_host_platform_device_count)
      # once a few dozen steps are queued (7 of 8 devices reach an all-reduce, and XLA aborts
      # after 40 s). On CPU (multi-device rehearsal) each step finishes before the next one
      # is dispatched.
      jax.block_until_ready(out)
    return out

  def train_temp_bytes(self, state, batch):
    """The compiled train step's temporary buffer, in bytes (compiling it, as its first call
    would: that call then finds it compiled)."""
    with sharding.context(self.mesh, self.rules):
      return self.train_jit.lower(state, batch).compile().memory_analysis().temp_size_in_bytes

  def eval(self, params, batch):
    with sharding.context(self.mesh, self.rules):
      return self.eval_jit(params, batch)

  def to_global(self, batch):
    """A process's rows of a batch -> global arrays split over the batch axes of the mesh."""
    return {
      k: jax.make_array_from_process_local_data(
        sharding.batch_sharding(self.mesh, self.rules, v.ndim), v
      )
      for k, v in batch.items()
    }


def build_steps(
  config: ml_collections.ConfigDict,
  objective: Objective,
  model_cfg: model_config.ModelConfig,
  mesh: jax.sharding.Mesh,
  rules: Sequence,
  batch_ndims: dict,
  total_steps: int,
) -> Steps:
  """Sharded init and the jitted train/eval steps for `batch_ndims` (batch key -> ndim)."""
  graphdef, logical = model_logical_specs(objective, model_cfg)
  tx, lr_fn = optimizer.make(config.optimizer, total_steps, logical)
  init_fn = functools.partial(init_state, objective=objective, model_cfg=model_cfg, tx=tx)
  key = jax.random.PRNGKey(config.seed)
  abstract = jax.eval_shape(init_fn, key)
  shardings = state_shardings(abstract, logical, mesh, rules)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
  )
  data_sharding = {k: sharding.batch_sharding(mesh, rules, n) for k, n in batch_ndims.items()}
  train_jit = jax.jit(
    functools.partial(
      train_step,
      graphdef=graphdef,
      objective=objective,
      tx=tx,
      lr_fn=lr_fn,
      grad_accum=config.batch.grad_accum,
      micro_sharding=data_sharding,
      nan_policy=config.train.nan_policy,
      rows_fn=batch_schedule(config.batch),
    ),
    in_shardings=(shardings, data_sharding),
    out_shardings=(shardings, None),
    donate_argnums=(0,),
  )
  # Evaluation batches carry extra keys (padding weights, bytes per target), and arrive as
  # global arrays already split over the batch axes (Steps.to_global): jit takes their shardings.
  # Its outputs are replicated, so that every process can read all the predictions.
  eval_jit = jax.jit(
    functools.partial(eval_step, graphdef=graphdef, objective=objective),
    out_shardings=sharding.replicated(mesh),
  )
  # Sharded initialisation: parameters are created in place, never whole on one host.
  init = lambda: jax.jit(init_fn, out_shardings=shardings)(key)
  return Steps(graphdef, abstract, shardings, data_sharding, train_jit, eval_jit, init, mesh, rules)
