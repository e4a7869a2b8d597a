"""One trainer for every objective: sharded init, jitted train/eval steps, the loop.

Data flow of a step: the loader's host-local numpy batch for step s -> a global jax.Array
(make_array_from_process_local_data) -> jit(train_step) with explicit in/out shardings and the
state donated -> metric sums -> periodic log / eval / checkpoint.

Resume order: the latest checkpoint in <workdir>/checkpoints (everything: params, optimizer,
step, RNG, data position); else config.init_from (parameters only, step 0); else scratch.
"""
import dataclasses
import functools
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from input_pipeline import batches, sources, tokenized, tokenizer
from models import layers
from pretrain import (checkpointing, config_checks, durations, metrics, objectives, optimizer,
                      sharding)


# ----------------------------------------------------------------------------- steps


def train_step(state, batch, *, graphdef, objective, tx, lr_fn, grad_accum, micro_sharding):
  """One optimizer update over `grad_accum` microbatches; returns (state, metric sums)."""
  params = state["params"]
  rng = jax.random.fold_in(state["rng"], state["step"])
  denominators = objective.denominators(batch)  # of the whole batch: exact accumulation

  def loss_fn(p, micro, key):
    return objective.loss(nnx.merge(graphdef, p), micro, key, denominators)

  grad_fn = jax.grad(loss_fn, has_aux=True)
  if grad_accum == 1:
    grads, sums = grad_fn(params, batch, rng)
  else:
    # Row i of microbatch k is global row i * grad_accum + k: every microbatch stays spread
    # over all data-parallel devices.
    micro = jax.tree.map(lambda x: x.reshape(-1, grad_accum, *x.shape[1:]).swapaxes(0, 1), batch)

    def body(carry, xs):
      mb, k = xs
      mb = jax.lax.with_sharding_constraint(mb, micro_sharding)
      g, s = grad_fn(params, mb, jax.random.fold_in(rng, k))
      return jax.tree.map(jnp.add, carry, (g, s)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(grad_fn, params, first, rng))
    (grads, sums), _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum)))
  updates, opt_state = tx.update(grads, state["opt_state"], params)
  new_params = optax.apply_updates(params, updates)
  out = dict(sums, **denominators, grad_norm=optax.tree.norm(grads),
             update_norm=optax.tree.norm(updates), param_norm=optax.tree.norm(new_params),
             lr=lr_fn(state["step"]))
  new_state = dict(step=state["step"] + 1, params=new_params, opt_state=opt_state, rng=state["rng"])
  return new_state, out


def eval_step(params, batch, *, graphdef, objective):
  """Sums and denominators of one evaluation batch (no dropout)."""
  denominators = objective.denominators(batch)
  _, sums = objective.loss(nnx.merge(graphdef, params), batch, None, denominators)
  return dict(sums, **denominators)


# ----------------------------------------------------------------------------- setup


def init_state(key, *, objective, model_cfg, tx):
  params_key, rng = jax.random.split(key)
  model = objective.make_model(model_cfg, nnx.Rngs(params=params_key))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)


def state_shardings(abstract_state, logical_specs, tx, mesh, rules):
  """Params by their logical names; optimizer moments like their params; the rest replicated."""
  params = sharding.tree_shardings(logical_specs, mesh, rules)
  rep = sharding.replicated(mesh)
  opt = optax.tree_utils.tree_map_params(
      tx, lambda _, s: s, abstract_state["opt_state"], params,
      transform_non_params=lambda _: rep)
  return dict(step=rep, params=params, opt_state=opt, rng=rep)


def model_logical_specs(objective, model_cfg):
  abstract = nnx.eval_shape(lambda: objective.make_model(model_cfg, nnx.Rngs(params=0)))
  graphdef, params = nnx.split(abstract, nnx.Param)
  return graphdef, nnx.to_pure_dict(nnx.get_partition_spec(params))


@dataclasses.dataclass
class Steps:
  """Everything compiled for one model on one mesh (the trainer, AOT check and benchmarks)."""
  graphdef: Any
  abstract_state: Any   # ShapeDtypeStructs carrying their shardings
  state_shardings: Any
  data_sharding: dict   # batch key -> NamedSharding
  train_jit: Any        # jitted train_step (lower it under `sharding.context(mesh, rules)`)
  eval_jit: Any
  init: Callable        # () -> a freshly initialised, sharded state
  mesh: Any
  rules: Any

  def train(self, state, batch):
    with sharding.context(self.mesh, self.rules):  # for activation constraints in the model
      return self.train_jit(state, batch)

  def eval(self, params, batch):
    with sharding.context(self.mesh, self.rules):
      return self.eval_jit(params, batch)


def build_steps(config, objective, model_cfg, mesh, rules, batch_ndims, total_steps):
  """Sharded init and the jitted train/eval steps for `batch_ndims` (batch key -> ndim)."""
  tx, lr_fn = optimizer.make(config.optimizer, total_steps)
  graphdef, logical = model_logical_specs(objective, model_cfg)
  init_fn = functools.partial(init_state, objective=objective, model_cfg=model_cfg, tx=tx)
  key = jax.random.PRNGKey(config.seed)
  abstract = jax.eval_shape(init_fn, key)
  shardings = state_shardings(abstract, logical, tx, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  data_sharding = {k: sharding.batch_sharding(mesh, rules, n) for k, n in batch_ndims.items()}
  train_jit = jax.jit(
      functools.partial(train_step, graphdef=graphdef, objective=objective, tx=tx, lr_fn=lr_fn,
                        grad_accum=config.batch.grad_accum, micro_sharding=data_sharding),
      in_shardings=(shardings, data_sharding), out_shardings=(shardings, None),
      donate_argnums=(0,))
  eval_jit = jax.jit(functools.partial(eval_step, graphdef=graphdef, objective=objective),
                     in_shardings=(shardings["params"], data_sharding))
  # Sharded initialisation: parameters are created in place, never whole on one host.
  init = lambda: jax.jit(init_fn, out_shardings=shardings)(key)
  return Steps(graphdef, abstract, shardings, data_sharding, train_jit, eval_jit, init, mesh,
               rules)


class Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (agreed across processes)."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self):
    if jax.process_count() > 1:
      return bool(multihost_utils.process_allgather(np.int32(self.requested)).any())
    return self.requested

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


def load_data(config, objective):
  """Prepares and tokenizes every dataset (once; later runs find them done) and builds the
  train loader (one dataset, or their Mixture) and one eval loader per dataset.

  Loaders are global: a process asks for its rows of each global batch, so the batches do
  not depend on the number of processes. Process 0 does the shared work first (tfds
  preparation, tokenizer training, manifests); the processes share out the pieces to tokenize
  (and BERT's pairs to build).
  """
  data, pidx, pcount = config.data, jax.process_index(), jax.process_count()

  def barrier(name):
    if pcount > 1:
      multihost_utils.sync_global_devices(name)

  def first_process_first(fn):
    if pidx == 0:
      out = fn()
    barrier(fn.__name__)
    return out if pidx == 0 else fn()

  datasets = sources.named(data)
  built = first_process_first(lambda: sources.builders(data))
  tok = first_process_first(lambda: tokenized.tokenizer_for(data, built))
  shared = dict(process_index=pidx, process_count=pcount)
  log = (lambda message: print(message, flush=True)) if pidx == 0 else (lambda message: None)
  tokenized.prepare_all(data, objective.mode, tok, built, write_manifest=pcount == 1, log=log,
                        **shared)
  barrier("pieces tokenized")
  if pcount > 1:
    first_process_first(lambda: tokenized.prepare_all(data, objective.mode, tok, built))
  opened = {(name, split): tokenized.open_split(src, built[name], split, tok, objective.mode)
            for name, src, split in tokenized.splits(data)}
  index = {name: k for k, (name, _, _) in enumerate(datasets)}
  for name, src, split in tokenized.splits(data):
    objective.build(opened[name, split], src, tok, seq_len=config.batch.seq_len,
                    seed=[config.seed, index[name]], **shared)
  barrier("examples built")

  train, val, notes = {}, {}, []
  for k, (name, src, _) in enumerate(datasets):
    kw = dict(batch_size=config.batch.size, seq_len=config.batch.seq_len, seed=[config.seed, k])
    for split, shuffle, out in ((src.train_split, data.shuffle, train),
                                (src.eval_split, False, val)):
      out[name] = objective.load(opened[name, split], src, tok, shuffle=shuffle, **kw)
      notes.append(f"data{' ' + name if name else ''}: {opened[name, split].summary()}"
                   + (f"; {out[name].note}" if out[name].note else ""))
  if len(train) > 1:
    train = batches.Mixture(train, {name: w for name, _, w in datasets}, config.batch.size)
  else:
    train = train[""]
  return tok, train, val, notes


# ----------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir, devices=None):
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns final metrics.

  `devices` restricts the mesh to a subset of the devices (default: all of them).
  """
  devices = jax.devices() if devices is None else list(devices)
  config_checks.check(config, len(devices), jax.process_count())
  config_checks.check_workdir(workdir)
  is_main = jax.process_index() == 0
  rules = [tuple(r) for r in config.mesh.rules]
  mesh = sharding.make_mesh(config.mesh, devices)

  objective = objectives.get(config.objective)
  tok, train_data, val_data, data_notes = load_data(config, objective)
  model_cfg = layers.resolve(config.model, tok.get_vocab_size())
  total_steps = durations.total_steps(config)
  tok_id = tokenizer.identity(tok)
  # Example counts and mixture weights identify the data well enough to warn when a resumed
  # run's has changed (say, new weights for the next stage of a curriculum).
  datasets_meta = {"train": train_data.num_examples,
                   "eval": {name: loader.num_examples for name, loader in val_data.items()},
                   "weights": {name: w for name, _, w in sources.named(config.data)}}

  # Everything that can fail on the checkpoint is checked before compiling.
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep=config.checkpoint.keep,
                                    async_save=config.checkpoint.async_save)
  latest = ckpt.latest_step()
  init_from = None
  if latest is not None:
    meta = ckpt.meta(latest)
    checkpointing.check_compatible(meta["model"], model_cfg, ckpt.directory)
    if meta["tokenizer"] != tok_id:
      raise checkpointing.CheckpointError(
          f"config.data.tokenizer: the checkpoint in {ckpt.directory} was trained with another "
          "tokenizer; use the same data and tokenizer settings or a fresh workdir")
    saved = meta["data"].get("datasets")
    if saved is not None and saved != datasets_meta:
      logging.warning("resuming with other data than the checkpoint's (%s, now %s): the batches "
                      "from here on differ from the original run's", saved, datasets_meta)
  elif config.init_from:
    source = config.init_from
    if os.path.isdir(os.path.join(source, "checkpoints")):  # a run's workdir
      source = os.path.join(source, "checkpoints")
    init_from = checkpointing.Checkpointer(source, read_only=True)
    if init_from.latest_step() is None:
      raise checkpointing.CheckpointError(
          f"config.init_from: no checkpoint in {config.init_from!r}; give a run's checkpoints dir")
    checkpointing.check_compatible(init_from.meta(init_from.latest_step())["model"], model_cfg,
                                   config.init_from)

  if is_main:
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      json.dump(dict(config.to_dict(), resolved_model=model_cfg.to_dict()), f, indent=2)

  local = config.batch.size // jax.process_count()
  rows = np.arange(jax.process_index() * local, (jax.process_index() + 1) * local)
  first_batch = train_data.batch(0, rows)  # for the batch structure only
  steps = build_steps(config, objective, model_cfg, mesh, rules,
                      {k: v.ndim for k, v in first_batch.items()}, total_steps)
  if latest is not None:
    state = ckpt.restore(latest, steps.abstract_state)
    logging.info("Resumed from %s at step %d", ckpt.directory, latest)
  else:
    state = steps.init()
    if init_from is not None:
      step = init_from.latest_step()
      restored = init_from.restore_params(step, steps.abstract_state["params"])
      state = dict(state, params=restored)
      init_from.close()
      logging.info("Initialised parameters from %s step %d", config.init_from, step)
  start = int(state["step"])
  data_sharding, p_train, p_eval = steps.data_sharding, steps.train, steps.eval

  def to_global(batch):
    return {k: jax.make_array_from_process_local_data(data_sharding[k], v)
            for k, v in batch.items()}

  def evaluate(params):
    """Metrics per dataset ('name/metric'), and over all of them together."""
    per, total = {}, None
    for name, loader in val_data.items():
      sums = None
      for i in range(max(1, config.train.eval_batches)):
        out = p_eval(params, to_global(loader.eval_batch(i, rows)))
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
      sums = jax.device_get(sums)
      total = sums if total is None else jax.tree.map(np.add, total, sums)
      if name:
        per.update({f"{name}/{k}": v for k, v in objective.summarize(sums).items()})
    return dict(objective.summarize(total), **per)

  n_params = layers.count_params(lambda: objective.make_model(model_cfg, nnx.Rngs(0)))
  tokens_per_step = config.batch.size * config.batch.seq_len
  flops_per_step = objective.flops_per_token(model_cfg, n_params, config) * tokens_per_step
  peak, peak_source = metrics.peak_flops(config.train.peak_flops)
  writer = metrics.Writer(workdir, enabled=is_main)
  writer.print(
      f"model {model_cfg.size}: {n_params / 1e6:.2f}M params (excl. positions), vocab "
      f"{model_cfg.vocab_size}; mesh {dict(mesh.shape)}; {total_steps} steps of {tokens_per_step} "
      f"tokens; train {train_data.num_examples} examples; peak {peak:.3g} FLOP/s/device "
      f"({peak_source}); MFU FLOPs/token as in pretrain/metrics.py")

  for note in data_notes:
    writer.print(note)

  def meta(step):
    return {"model": model_cfg.to_dict(), "tokenizer": tok_id,
            "data": {"step": step, "seed": config.seed, "process_count": jax.process_count(),
                     "datasets": datasets_meta}}

  stop_at = min(total_steps, config.train.stop_at_step or total_steps)
  preemption = Preemption()
  step, pending, window_start, window_steps = start, [], None, 0
  last = {}
  try:
    while step < stop_at:
      state, out = p_train(state, to_global(train_data.batch(step, rows)))
      step += 1
      pending.append(out)
      if window_start is None:  # the first step includes compilation: time from its end
        _check_finite(objective.summarize(jax.device_get(out)), step, config)
        window_start, window_steps = time.perf_counter(), 0
      else:
        window_steps += 1
      if durations.every(step, config.train.log_every) or step == stop_at:
        if pending:
          fetched = jax.device_get(pending)
          elapsed = time.perf_counter() - window_start
          last = _summarise(objective, fetched, elapsed, window_steps, tokens_per_step, flops_per_step,
                            peak * len(devices))
          _check_finite(last, step, config)
          last["epoch"] = train_data.epoch_of(step)
          if isinstance(train_data, batches.Mixture):
            last.update({f"epoch/{n}": e for n, e in train_data.epochs(step).items()})
          last["tokens_seen"] = step * tokens_per_step
          writer.write(step, last, prefix="train/")
          eta = (total_steps - step) * last["step_time_s"]
          writer.print(
              f"step {step}/{total_steps} | loss {last['loss']:.4f} | lr {last['lr']:.2e} | "
              f"gnorm {last['grad_norm']:.3f} | {last['tokens_per_s']:,.0f} tok/s | "
              f"{last['step_time_s'] * 1e3:.1f} ms/step | MFU {100 * last['mfu']:.2f}% | "
              f"ETA {metrics.format_duration(eta)}")
          pending, window_start, window_steps = [], time.perf_counter(), 0
      if durations.every(step, config.train.eval_every) or step == total_steps:
        eval_start = time.perf_counter()
        ev = evaluate(state["params"])
        writer.write(step, ev, prefix="eval/")
        writer.print(f"step {step}/{total_steps} | eval " + " | ".join(
            f"{k} {v:.4g}" for k, v in ev.items()))
        last.update({f"eval_{k}": v for k, v in ev.items()})
        if window_start is not None:  # eval time does not count as training time
          window_start += time.perf_counter() - eval_start
      if preemption.should_stop():
        ckpt.save(step, state, meta(step), force=True)
        ckpt.wait()
        writer.print(f"preempted: saved a checkpoint at step {step}; rerun the same command to resume")
        last["preempted_at"] = step
        break
      if durations.every(step, config.checkpoint.every) or step == stop_at:
        ckpt.save(step, state, meta(step), force=True)
  finally:
    preemption.restore()
    ckpt.close()
    writer.close()
  last["step"] = step
  last["state"] = state
  return last


def _check_finite(out, step, config):
  if not config.train.allow_nan and not np.isfinite(out["loss"]):
    raise FloatingPointError(
        f"loss is {out['loss']} at step {step}; lower config.optimizer.lr, or set "
        "config.train.allow_nan=True to continue")


def _summarise(objective, fetched, elapsed, steps, tokens_per_step, flops_per_step, peak_total):
  """Means over the logged window (sums added, then divided); timing over its steps after the
  first, which includes compilation."""
  totals = {k: sum(f[k] for f in fetched) for k in fetched[-1]}
  step_time = elapsed / steps if steps else float("nan")
  return dict(
      objective.summarize(totals),
      grad_norm=float(fetched[-1]["grad_norm"]), param_norm=float(fetched[-1]["param_norm"]),
      update_norm=float(fetched[-1]["update_norm"]), lr=float(fetched[-1]["lr"]),
      step_time_s=step_time, tokens_per_s=tokens_per_step / step_time,
      mfu=flops_per_step / step_time / peak_total)
