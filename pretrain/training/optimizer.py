"""The optimizer (config.optimizer.name: AdamW, Lion, Muon or Adafactor, from optax) with
weight decay on matrices only, global-norm clipping and a warmup+decay schedule: cosine,
linear, constant, or warmup-stable-decay (WSD: the peak lr until the last `decay_fraction` of
the run, then a linear or 1-sqrt cooldown to min_lr). Per-group lr multipliers
(config.optimizer.lr_scale) scale the updates of the embeddings, the output head, the hidden
matrices and the scalars (norms, biases) apart.

Muon (optax.contrib.muon) orthogonalises the momentum of the hidden matrices by Newton-Schulz
iterations; the embeddings, the head, norms and biases take AdamW (b1, b2; no weight decay).
Which axes of a parameter form the matrix comes from its logical axis names: 'embed' against
the hidden axes (heads x head_dim, mlp), with a scanned stack's 'layers' axis a batch of
matrices. Updates are scaled to AdamW's RMS (consistent_rms=0.2), so that one lr serves both.

Adafactor keeps, for a matrix of at least 128 x 128, only the row and column means of the
squared gradients (factored over its two largest axes; a scanned stack per layer), without
momentum: optimizer state of O(rows + cols) instead of AdamW's 2x the parameters. Updates are
clipped to RMS 1 per parameter (Shazeer & Stern 2018) and scaled by the lr as AdamW's are,
with the same decoupled weight decay. Its factored statistics are replicated: they are a
sliver of the parameters' size."""

import jax
import jax.numpy as jnp
import optax

from pretrain.ground import errors

SCHEDULES = ("cosine", "linear", "constant", "wsd")  # after a linear warmup
DECAY_SHAPES = ("linear", "1-sqrt")  # WSD's cooldown
NAMES = ("adamw", "lion", "muon", "adafactor")
LR_GROUPS = ("embed", "head", "hidden", "scalar")  # config.optimizer.lr_scale's fields
HIDDEN_AXES = ("heads", "kv_heads", "head_dim", "mlp")  # with 'embed': a hidden matrix


def check_schedule(name):
  if name not in SCHEDULES:
    raise errors.UserError(
      f"config.optimizer.schedule: {name!r}; use one of {', '.join(map(repr, SCHEDULES))}"
    )


def name(opt):
  return opt.get("name", "adamw")  # (a run's config.json from before the field: AdamW)


def check(opt):
  """One-line errors for the optimizer's name and the schedule's fields."""
  check_schedule(opt.schedule)
  if name(opt) not in NAMES:
    raise errors.UserError(
      f"config.optimizer.name: {name(opt)!r}; use one of {', '.join(map(repr, NAMES))}"
    )
  scales = lr_scales(opt)
  for group, scale in scales.items():
    if group not in LR_GROUPS or not scale >= 0:
      raise errors.UserError(
        f"config.optimizer.lr_scale.{group}: {scale!r}; the groups are "
        f"{', '.join(LR_GROUPS)}, each a multiplier >= 0 of the lr"
      )
  if opt.schedule != "wsd":
    return
  if opt.decay_shape not in DECAY_SHAPES:
    raise errors.UserError(
      f"config.optimizer.decay_shape: {opt.decay_shape!r}; use one of "
      f"{', '.join(map(repr, DECAY_SHAPES))}"
    )
  if not 0 < opt.decay_fraction <= 1:
    raise errors.UserError(
      "config.optimizer.decay_fraction: must be in (0, 1] (the share of "
      "the run WSD spends cooling down)"
    )


def warmup_steps(opt, total_steps):
  """opt.warmup_fraction of the run when > 0 (fine-tuning's 10%), else opt.warmup_steps."""
  if opt.warmup_fraction > 0:
    return round(opt.warmup_fraction * total_steps)
  return opt.warmup_steps


def schedule(opt, total_steps):
  """Linear warmup from 0 to opt.lr, then cosine/linear decay to opt.min_lr (or constant)."""
  check_schedule(opt.schedule)
  warmup = min(warmup_steps(opt, total_steps), total_steps)
  # cosine and linear decay until this step, then hold min_lr (GPT-3: 260B of 300B tokens)
  decay_end = round(opt.get("decay_until", 1.0) * total_steps)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=opt.lr,
      warmup_steps=warmup,
      decay_steps=max(decay_end, warmup + 1),
      end_value=opt.min_lr,
    )
  ramp = optax.linear_schedule(0.0, opt.lr, max(1, warmup))
  if opt.schedule == "wsd":
    cooldown = max(1, min(round(opt.decay_fraction * total_steps), total_steps - warmup))
    stable = total_steps - warmup - cooldown
    return optax.join_schedules(
      [ramp, optax.constant_schedule(opt.lr), _cooldown(opt, cooldown)], [warmup, warmup + stable]
    )
  decay = {
    "linear": optax.linear_schedule(opt.lr, opt.min_lr, max(1, decay_end - warmup)),
    "constant": optax.constant_schedule(opt.lr),
  }
  return optax.join_schedules([ramp, decay[opt.schedule]], [warmup])


def _cooldown(opt, steps):
  """WSD's cooldown from lr to min_lr over `steps`: linear, or 1-sqrt (the drop to go scaled
  by 1 - sqrt(t / steps): steep at first, then flatter than linear)."""
  if opt.decay_shape == "linear":
    return optax.linear_schedule(opt.lr, opt.min_lr, steps)

  def one_minus_sqrt(count):
    frac = jnp.clip(count / steps, 0.0, 1.0)
    return opt.min_lr + (opt.lr - opt.min_lr) * (1.0 - jnp.sqrt(frac))

  return one_minus_sqrt


def decay_mask(params):
  """Weight decay on matrices (kernels, embeddings), not on biases and norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def is_hidden(axes):
  """Whether a parameter with these logical axes is a hidden matrix: 'embed' against a hidden
  axis (attention's projections, the MLP's layers), as opposed to embeddings, the head, norms
  and biases."""
  return "embed" in axes and any(a in HIDDEN_AXES for a in axes)


def muon_dimensions(logical):
  """optax's MuonDimensionNumbers for each hidden matrix of a tree of logical axis names
  (PartitionSpecs), None for the parameters AdamW takes."""
  from optax.contrib import MuonDimensionNumbers

  def dims(spec):
    axes = tuple(spec)
    if not is_hidden(axes):
      return None  # embeddings and head (vocab x embed), norms, biases
    embed = axes.index("embed")
    hidden = tuple(i for i, a in enumerate(axes) if a not in ("layers", "embed"))
    if embed < hidden[0]:  # embed -> hidden (query, key, value, mlp in)
      return MuonDimensionNumbers(reduction_axis=embed, output_axis=hidden)
    return MuonDimensionNumbers(reduction_axis=hidden, output_axis=embed)  # back to embed

  return jax.tree.map(dims, logical, is_leaf=_is_spec)


def lr_scales(opt):
  """{group: multiplier} of config.optimizer.lr_scale (none in configs from before it)."""
  return dict(opt.get("lr_scale") or {})


def _is_spec(x):
  return isinstance(x, jax.sharding.PartitionSpec)


def lr_group(spec):
  """The lr group of a parameter by its logical axes: 'embed' (token, position and type
  tables), 'head' (what maps to the vocabulary or to classes), 'hidden' (Muon's matrices)
  or 'scalar' (norm scales and biases)."""
  axes = tuple(spec)
  if axes and axes[0] in ("vocab", "positions", "types"):
    return "embed"
  if "vocab" in axes or "classes" in axes:
    return "head"
  if is_hidden(axes):
    return "hidden"
  return "scalar"


def scale_by_group(opt, logical):
  """Multiplies each parameter's update by its group's lr_scale (so the lr, and with it the
  decoupled weight decay, is scaled per group); None when every multiplier is 1."""
  scales = {g: float(v) for g, v in lr_scales(opt).items() if float(v) != 1.0}
  if not scales:
    return None
  if logical is None:
    raise ValueError("config.optimizer.lr_scale needs the parameters' logical axis names")
  factors = jax.tree.map(lambda spec: scales.get(lr_group(spec), 1.0), logical, is_leaf=_is_spec)
  return optax.stateless(
    lambda updates, params: jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors)
  )


def adafactor(lr, opt):
  """optax's factored second moments and block-RMS clipping, with AdamW's lr and weight decay."""
  return optax.chain(
    optax.scale_by_factored_rms(decay_rate=0.8, min_dim_size_to_factor=128),
    optax.clip_by_block_rms(1.0),
    optax.add_decayed_weights(opt.weight_decay, mask=decay_mask),
    optax.scale_by_learning_rate(lr),
  )


def make(opt, total_steps, logical=None):
  """(the gradient transformation, the lr schedule) of config.optimizer (`opt`); `logical`:
  the parameters' logical axis names (Muon needs them)."""
  check(opt)
  lr = schedule(opt, total_steps)
  parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip else []
  if name(opt) == "adamw":
    parts.append(
      optax.adamw(
        lr,
        b1=opt.b1,
        b2=opt.b2,
        eps=opt.eps,
        mu_dtype=opt.mu_dtype or None,
        weight_decay=opt.weight_decay,
        mask=decay_mask,
      )
    )
  elif name(opt) == "lion":  # sign updates, so its lr is usually 3-10x smaller than AdamW's
    parts.append(
      optax.lion(
        lr,
        b1=opt.b1,
        b2=opt.b2,
        mu_dtype=opt.mu_dtype or None,
        weight_decay=opt.weight_decay,
        mask=decay_mask,
      )
    )
  elif name(opt) == "adafactor":
    parts.append(adafactor(lr, opt))
  else:
    parts.append(
      optax.contrib.muon(
        lr,
        beta=opt.muon_momentum,
        weight_decay=opt.weight_decay,
        weight_decay_mask=decay_mask,
        mu_dtype=opt.mu_dtype or None,
        adam_b1=opt.b1,
        adam_b2=opt.b2,
        # optax applies its AdamW part's decay to every leaf (norms and biases too): none, as
        # in modded-nanogpt; the hidden matrices take weight_decay
        adam_weight_decay=0.0,
        muon_weight_dimension_numbers=muon_dimensions(logical),
        consistent_rms=0.2,
      )
    )
  group_scale = scale_by_group(opt, logical)
  if group_scale is not None:
    parts.append(group_scale)
  return optax.chain(*parts), lr
