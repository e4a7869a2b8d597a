"""The optimizer (config.optimizer.name: AdamW or Lion, from optax) with weight
decay on matrices only, global-norm clipping and a warmup+decay schedule: cosine, linear,
constant, or warmup-stable-decay (WSD: the peak lr until the last `decay_fraction` of the run,
then a linear or 1-sqrt cooldown to min_lr)."""
import jax
import jax.numpy as jnp
import optax

from configs import errors

SCHEDULES = ("cosine", "linear", "constant", "wsd")  # after a linear warmup
DECAY_SHAPES = ("linear", "1-sqrt")  # WSD's cooldown
NAMES = ("adamw", "lion")


def check_schedule(name):
  if name not in SCHEDULES:
    raise errors.UserError(f"config.optimizer.schedule: {name!r}; use one of "
                           f"{', '.join(map(repr, SCHEDULES))}")


def name(opt):
  return opt.get("name", "adamw")  # (a run's config.json from before the field: AdamW)


def check(opt):
  """One-line errors for the optimizer's name and the schedule's fields."""
  check_schedule(opt.schedule)
  if name(opt) not in NAMES:
    raise errors.UserError(f"config.optimizer.name: {name(opt)!r}; use one of "
                           f"{', '.join(map(repr, NAMES))}")
  if opt.schedule != "wsd":
    return
  if opt.decay_shape not in DECAY_SHAPES:
    raise errors.UserError(f"config.optimizer.decay_shape: {opt.decay_shape!r}; use one of "
                           f"{', '.join(map(repr, DECAY_SHAPES))}")
  if not 0 < opt.decay_fraction <= 1:
    raise errors.UserError("config.optimizer.decay_fraction: must be in (0, 1] (the share of "
                           "the run WSD spends cooling down)")


def warmup_steps(opt, total_steps):
  """opt.warmup_fraction of the run when > 0 (fine-tuning's 10%), else opt.warmup_steps."""
  if opt.warmup_fraction > 0:
    return round(opt.warmup_fraction * total_steps)
  return opt.warmup_steps


def schedule(opt, total_steps):
  """Linear warmup from 0 to opt.lr, then cosine/linear decay to opt.min_lr (or constant)."""
  check_schedule(opt.schedule)
  warmup = min(warmup_steps(opt, total_steps), total_steps)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=opt.min_lr)
  ramp = optax.linear_schedule(0.0, opt.lr, max(1, warmup))
  if opt.schedule == "wsd":
    cooldown = max(1, min(round(opt.decay_fraction * total_steps), total_steps - warmup))
    stable = total_steps - warmup - cooldown
    return optax.join_schedules(
        [ramp, optax.constant_schedule(opt.lr), _cooldown(opt, cooldown)],
        [warmup, warmup + stable])
  decay = {
      "linear": optax.linear_schedule(opt.lr, opt.min_lr, max(1, total_steps - warmup)),
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


def make(opt, total_steps):
  """(the gradient transformation, the lr schedule) of config.optimizer (`opt`)."""
  check(opt)
  lr = schedule(opt, total_steps)
  parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip else []
  if name(opt) == "adamw":
    parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, mu_dtype=opt.mu_dtype or None,
                             weight_decay=opt.weight_decay, mask=decay_mask))
  else:  # lion: sign updates, so its lr is usually 3-10x smaller than AdamW's
    parts.append(optax.lion(lr, b1=opt.b1, b2=opt.b2, mu_dtype=opt.mu_dtype or None,
                            weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*parts), lr
