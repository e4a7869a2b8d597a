"""A plan for a named target (pretrain/planning/targets.py): the mesh, remat, microbatches and
dtypes that fit its chips, the compiled step on as many fake devices, and the time and cost to
the config's token budget.

The choice is made with the analytic memory model (pretrain/planning/memory_model.py), the
figure to believe for a TPU or a GPU. Candidates go from the fewest microbatches (each one
gathers every FSDP-sharded weight again; but at least two when the config ramps its batch up,
which goes by whole microbatches), then from the least recomputation to the most (remat
none, dots, full: at most a third more FLOPs), then from the fewest tensor ways (1 to the chips
of one host: tensor parallelism's all-reduces want the fastest links); the first that fits in
HEADROOM of the chip's memory wins. The data axis spans the slices of a multi-slice
target (over the data-centre network), fsdp the chips of a slice. A field named on the command
line (--config.mesh.*, .model.remat, .batch.grad_accum, .model.dtype, .optimizer.mu_dtype) is
kept as given.
"""

import dataclasses

import jax
import ml_collections

from pretrain.devices import sharding
from pretrain.ground import errors
from pretrain.objectives import registry
from pretrain.planning import compile_check, memory_model, targets
from pretrain.training import config_checks, durations

REMATS = ("none", "dots", "full")  # least recomputation first
TENSOR_WAYS = (1, 2, 4, 8)
# Of a chip's memory, the share a plan may fill by the analytic model: the rest is for the
# runtime's own buffers, XLA's fragmentation and the model's error (within 25% on small shapes).
HEADROOM = 0.85
# Model FLOPs utilisation to time a plan at, when --mfu is not given: a round figure below the
# published anchors for dense models of this scale, PaLM 540B's 46.2% on TPU v4 (Chowdhery et al.
# 2022, Table 3) and Megatron-LM's 52% for GPT-3 175B on A100s (Narayanan et al. 2021). No
# accelerator figure of ours is in benchmarks/RESULTS.md yet.
DEFAULT_MFU = 0.4


@dataclasses.dataclass(frozen=True)
class Plan:
  target: targets.Target
  overrides: dict  # config fields the plan sets, {'mesh.fsdp': 64, ...}
  estimate: memory_model.Estimate

  @property
  def fits(self) -> bool:
    return self.estimate.peak <= HEADROOM * self.target.chip.memory


def _mesh(target: targets.Target, tensor: int) -> dict:
  mesh = {"mesh.data": target.slices, "mesh.fsdp": target.chips_per_slice // tensor}
  mesh |= {"mesh.sequence": 1, "mesh.tensor": tensor}
  return mesh | ({"mesh.dcn.data": target.slices} if target.slices > 1 else {})


def _candidates(config, target: targets.Target, fixed: set[str]):
  """Override sets in the order tried (module docstring)."""
  base = {
    f"{section}.{field}": "bfloat16"
    for section, field in (("model", "dtype"), ("optimizer", "mu_dtype"))
    if f"{section}.{field}" not in fixed and config[section][field] != "bfloat16"
  }
  if any(f.startswith("mesh.") for f in fixed):
    meshes: list[dict] = [{}]
  else:
    fit = [t for t in TENSOR_WAYS if t <= target.chip.host_chips and t <= target.chips_per_slice]
    meshes = [_mesh(target, t) for t in fit if target.chips_per_slice % t == 0]
  size = config.batch.size
  accums = [a for a in range(1, size + 1) if size % a == 0]
  if config.batch.warmup_steps:  # the batch ramp grows by microbatches: keep it if it fits
    accums = accums[1:] + accums[:1]
  if "batch.grad_accum" in fixed:
    accums = [config.batch.grad_accum]
  remats = [config.model.remat] if "model.remat" in fixed else REMATS
  for accum in accums:
    for remat in remats:
      for mesh in meshes:
        yield base | mesh | {"model.remat": remat, "batch.grad_accum": accum} | _ramp(config, accum)


def _ramp(config, accum: int) -> dict:
  """The batch ramp grows by whole microbatches: none with one microbatch, and it starts at one
  microbatch when the config's start is not a whole number of them."""
  b = config.batch
  if not b.warmup_steps:
    return {}
  if accum == 1:
    return {"batch.warmup_steps": 0}
  return {} if b.warmup_start % (b.size // accum) == 0 else {"batch.warmup_start": 0}


def with_overrides(config, overrides: dict):
  out = ml_collections.ConfigDict(config.to_dict())
  out.update_from_flattened_dict(overrides)
  return out


def estimate(config, target: targets.Target, n_params: int) -> memory_model.Estimate:
  """The analytic per-device memory of `config` (its mesh set) on `target`'s chips."""
  mesh = sharding.mesh_shape(config.mesh, target.chips)
  state = memory_model.state_bytes(config.optimizer, n_params, mesh["fsdp"] * mesh["tensor"])
  return memory_model.for_config(
    config, compile_check.resolved_model(config), state_bytes=state, n_params=n_params, mesh=mesh
  )


def choose(config, target: targets.Target, fixed: set[str], n_params: int) -> Plan | None:
  """The first candidate that is a valid config on `target` and fits; None if none does."""
  for overrides in _candidates(config, target, fixed):
    candidate = with_overrides(config, overrides)
    try:
      config_checks.check(candidate, target.chips)
    except errors.UserError:  # e.g. a microbatch the batch ways do not divide
      continue
    plan = Plan(target, overrides, estimate(candidate, target, n_params))
    if plan.fits:
      return plan
  return None


def smallest(config, target: targets.Target, fixed: set[str], n_params: int) -> Plan | None:
  """The plan on the smallest larger target of the same chip that fits; None if none does."""
  for bigger in targets.larger(target):
    if plan := choose(config, bigger, fixed, n_params):
      return plan
  return None


@dataclasses.dataclass(frozen=True)
class Timing:
  flops_per_step: float  # the MFU formula's (pretrain/training/metrics.py)
  step_seconds: float
  steps: int  # to the config's token budget (or total_steps)

  @property
  def days(self) -> float:
    return self.step_seconds * self.steps / 86400


def timing(config, target: targets.Target, mfu: float) -> Timing:
  """The step's FLOPs, its time at `mfu` of the target's bf16 peak, and the run's steps."""
  objective, cfg = registry.get(config.objective), compile_check.resolved_model(config)
  per_token = objective.flops_per_token(cfg, compile_check.count_params(config, True), config)
  flops = per_token * config.batch.size * config.batch.seq_len
  seconds = flops / (target.chips * target.chip.peak_flops * mfu)
  return Timing(flops, seconds, durations.total_steps(config))


def _flags(overrides: dict) -> str:
  return " ".join(f"--config.{k}={v}" for k, v in overrides.items())


def refusal(config, target: targets.Target, fixed: set[str], n_params: int) -> str:
  """The one line for a target no candidate fits, naming the smallest that does."""
  best = smallest(config, target, fixed, n_params)
  if best is None:
    bigger = f"no {target.chip.name} target up to {target.chip.max_chips} chips fits either"
  else:
    bigger = f"the smallest {target.chip.name} target that fits is {best.target.name}"
  return (
    f"does NOT fit {target.name}: no mesh, remat or microbatching keeps it under "
    f"{HEADROOM:.0%} of {compile_check.human_bytes(target.chip.memory)} per chip; {bigger}"
  )


def compile_plan(config, plan: Plan) -> dict:
  """The compile check of the planned config on this process's (fake) devices, with the
  slices' data axis laid out as one (per-device memory does not change)."""
  planned = with_overrides(config, plan.overrides | {"mesh.dcn.data": 1})
  return compile_check.analyse(planned, jax.devices())


def report(plan: Plan, compiled: dict, time: Timing, mfu: float, price: float) -> str:
  chip, b = plan.target.chip, compile_check.human_bytes
  model = plan.estimate
  lines = [
    f"plan for {plan.target.name}: {plan.target.chips} {chip.name} chips of "
    f"{b(chip.memory)} and {chip.peak_flops / 1e12:.0f} TFLOP/s (bf16) each",
    f"  {_flags(plan.overrides)}",
    compile_check.report(compiled, 0),
    f"fits: analytic peak {b(model.peak)} per chip ({model.peak / chip.memory:.0%} of "
    f"{b(chip.memory)}; the plan keeps under {HEADROOM:.0%}), compiled on fake CPU devices "
    f"{b(compiled['peak_bytes'])}",
    f"time: {time.step_seconds:.3g} s per step at {mfu:.0%} MFU; {time.steps:,} steps: "
    f"{time.days:.3g} days ({time.days * 24 * plan.target.chips:,.0f} chip-hours)",
  ]
  if price:
    cost = time.days * 24 * plan.target.chips * price
    lines.append(f"cost: ${cost:,.0f} at ${price}/chip-hour")
  return "\n".join(lines)


def plan(config, target_name: str, fixed: set[str], mfu: float, price: float = 0.0):
  """(the report, whether it fits) for `config` on the named target; the entry point's call.
  Needs as many (fake) devices as the target has chips."""
  target = targets.parse(target_name)
  if len(jax.devices()) != target.chips:
    raise targets.TargetError(
      f"--target={target_name}: {target.chips} devices needed, {len(jax.devices())} present"
    )
  n_params = compile_check.count_params(config)
  chosen = choose(config, target, fixed, n_params)
  if chosen is None:
    return refusal(config, target, fixed, n_params), False
  planned = with_overrides(config, chosen.overrides)
  time = timing(planned, target, mfu)
  return report(chosen, compile_plan(config, chosen), time, mfu, price), True
