"""The ahead-of-time check's library: compile a config's train step for a mesh without running
it, and report what each device holds (XLA's buffer assignment beside the analytic model,
pretrain/planning/memory_model.py); search for the cheapest change that makes it fit.

XLA's own FLOP count (cost_analysis) is not used: it counts the body of a loop once, so a
scanned stack of layers or accumulated microbatches is undercounted by their number, and it
is for one device's program; it is no measure of the step's work.
"""

import jax
import ml_collections
import numpy as np

from models import cpu_kernels, layers, model_config
from pretrain.devices import sharding
from pretrain.ground import errors
from pretrain.objectives import objective as objective_lib
from pretrain.objectives import registry
from pretrain.planning import memory_model
from pretrain.training import config_checks, durations
from pretrain.training import steps as steps_lib


def human_bytes(n: float) -> str:
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if abs(n) < 1024 or unit == "TiB":
      return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
    n /= 1024
  return str(n)


def per_device_bytes(abstract_tree):
  """Bytes each device holds for a tree of ShapeDtypeStructs with shardings (the max device)."""
  total = 0
  for leaf in jax.tree.leaves(abstract_tree):
    shard = leaf.sharding.shard_shape(leaf.shape)
    total += int(np.prod(shard)) * np.dtype(leaf.dtype).itemsize
  return total


def total_bytes(abstract_tree):
  return sum(
    int(np.prod(l.shape)) * np.dtype(l.dtype).itemsize for l in jax.tree.leaves(abstract_tree)
  )


def resolved_model(config) -> model_config.ModelConfig:
  """The config's model, its vocabulary from config.model or the tokenizer's config (nothing
  is read from the dataset)."""
  return model_config.resolve(
    config.model, config.model.vocab_size or config.data.tokenizer.vocab_size
  )


def count_params(config, exclude_positions: bool = False) -> int:
  """The parameters of the config's model, from shapes alone (models/layers.py)."""
  params = objective_lib.abstract_params(registry.get(config.objective), resolved_model(config))
  return layers.param_count(params, exclude_positions)


def analyse(config, devices=None):
  """Compiles the train step of `config` on `devices`, as an accelerator would run it (not the
  CPU's own variant of the program: models/cpu_kernels.py: built_for); returns a dict of the numbers
  printed."""
  with cpu_kernels.built_for("accelerator"):
    return _analyse(config, devices)


def _analyse(config, devices):
  devices = jax.devices() if devices is None else list(devices)
  config_checks.check(config, len(devices), jax.process_count())
  rules = [tuple(r) for r in config.mesh.rules]
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = registry.get(config.objective)
  model_cfg = resolved_model(config)
  batch = objective.fake_batch(config, config.batch.size, model_cfg.vocab_size)
  steps = steps_lib.build_steps(
    config,
    objective,
    model_cfg,
    mesh,
    rules,
    {k: v.ndim for k, v in batch.items()},
    durations.total_steps(config),
  )
  abstract_batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=steps.data_sharding[k])
    for k, v in batch.items()
  }
  with sharding.context(mesh, rules):
    compiled = steps.train_jit.lower(steps.abstract_state, abstract_batch).compile()
  memory = compiled.memory_analysis()
  n_params = count_params(config, exclude_positions=True)
  state_arrays = {k: steps.abstract_state[k] for k in ("params", "opt_state")}
  out = {
    "devices": len(devices),
    "mesh": dict(mesh.shape),
    "params": n_params,
    "argument_bytes": memory.argument_size_in_bytes,
    "output_bytes": memory.output_size_in_bytes,
    "temp_bytes": memory.temp_size_in_bytes,
    "alias_bytes": memory.alias_size_in_bytes,
    "code_bytes": memory.generated_code_size_in_bytes,
    "state_bytes_per_device": per_device_bytes(state_arrays),
    "state_bytes_total": total_bytes(state_arrays),
    "formula_flops_per_step": objective.flops_per_token(model_cfg, n_params, config)
    * config.batch.size
    * config.batch.seq_len,
  }
  # Donated state buffers are reused for the outputs (alias bytes), so they count once.
  out["peak_bytes"] = (
    out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] + out["temp_bytes"]
  )
  out["model"] = memory_model.for_config(
    config,
    model_cfg,
    state_bytes=out["state_bytes_per_device"],
    n_params=count_params(config),
    mesh=dict(mesh.shape),
  )
  return out


def report(r, limit):
  lines = [
    f"mesh {r['mesh']} on {r['devices']} devices; {r['params'] / 1e6:.1f}M parameters",
    f"per device: arguments {human_bytes(r['argument_bytes'])}, outputs {human_bytes(r['output_bytes'])} "
    f"({human_bytes(r['alias_bytes'])} aliased with donated arguments), temporaries "
    f"{human_bytes(r['temp_bytes'])}, code {human_bytes(r['code_bytes'])}; peak ~{human_bytes(r['peak_bytes'])}",
    f"parameters + optimizer state: {human_bytes(r['state_bytes_per_device'])} per device of "
    f"{human_bytes(r['state_bytes_total'])} in all ({r['state_bytes_per_device'] / r['state_bytes_total']:.3f})",
    f"FLOPs per step: {r['formula_flops_per_step']:.3e} in all, "
    f"{r['formula_flops_per_step'] / r['devices']:.3e} per device (the MFU formula, "
    "pretrain/training/metrics.py)",
  ]
  lines += _model_lines(r["model"], r["peak_bytes"])
  if limit:
    fits = r["peak_bytes"] <= limit
    lines.append(f"{'fits' if fits else 'does NOT fit'} in {human_bytes(limit)} per device")
  return "\n".join(lines)


def _model_lines(model, compiled):
  """The analytic model's figures (pretrain/planning/memory_model.py), and a line when it and
  the compile disagree by more than a quarter."""
  lines = [
    f"analytic model per device: state {human_bytes(model.state)}, gradients "
    f"{human_bytes(model.gradients)}, activations kept {human_bytes(model.activations)}, largest "
    f"transient {human_bytes(model.transient)}; peak ~{human_bytes(model.peak)}"
  ]
  off = memory_model.disagreement(model.peak, compiled)
  if off > 0.25:
    lines.append(
      f"warning: the compiled peak and the analytic model differ by {off:.0%}: believe the "
      "compile for a CPU, the model for a TPU or GPU (the CPU compiler plans buffers otherwise)"
    )
  return lines


def ladder(config):
  """Memory-saving changes, cheapest first (in step time lost), each on top of the ones
  before: [(override, value)]."""
  out = []
  if config.model.dtype != "bfloat16":
    out.append(("model.dtype", "bfloat16"))  # halves activations; faster on accelerators
  if config.optimizer.mu_dtype != "bfloat16":
    out.append(("optimizer.mu_dtype", "bfloat16"))  # a sixth of the optimizer state
  mesh = sharding.mesh_shape(config.mesh, len(jax.devices()))
  if mesh["data"] > 1:
    out.append(("mesh.fsdp", mesh["fsdp"] * mesh["data"]))  # state sharded over all of them
    out.append(("mesh.data", 1))
  if config.model.remat in ("none", "offload"):
    out.append(("model.remat", "dots"))  # recompute all but the matmuls
  accum = config.batch.grad_accum
  while config.batch.size % (accum * 2) == 0:
    accum *= 2
    out.append(("batch.grad_accum", accum))  # smaller microbatches, same update
  out.append(("model.remat", "full"))  # recompute whole blocks
  return out


def search(config, limit, analyse_fn=None):
  """Applies `ladder` cumulatively until the step fits `limit` bytes per device; returns
  (overrides, result) of the first that fits, or (None, the last result)."""
  analyse_fn = analyse_fn or analyse
  config = ml_collections.ConfigDict(config.to_dict())
  overrides, result = {}, None
  for field, value in ladder(config):
    config.update_from_flattened_dict({field: value})
    overrides[field] = value
    if field == "mesh.fsdp":
      continue  # mesh.data moves with it, next
    try:
      result = analyse_fn(config)
    except errors.UserError:  # e.g. a microbatch the data-parallel ways do not divide
      continue
    if result["peak_bytes"] <= limit:
      return dict(overrides), result
  return None, result
