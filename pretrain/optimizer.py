"""AdamW with weight decay on matrices only, global-norm clipping and a warmup+decay schedule."""
import jax
import optax

from configs import errors

SCHEDULES = ("cosine", "linear", "constant")  # after a linear warmup


def check_schedule(name):
  if name not in SCHEDULES:
    raise errors.UserError(f"config.optimizer.schedule: {name!r}; use one of "
                           f"{', '.join(map(repr, SCHEDULES))}")


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
  decay = {
      "linear": optax.linear_schedule(opt.lr, opt.min_lr, max(1, total_steps - warmup)),
      "constant": optax.constant_schedule(opt.lr),
  }
  return optax.join_schedules(
      [optax.linear_schedule(0.0, opt.lr, max(1, warmup)), decay[opt.schedule]], [warmup])


def decay_mask(params):
  """Weight decay on matrices (kernels, embeddings), not on biases and norm scales."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make(opt, total_steps):
  lr = schedule(opt, total_steps)
  parts = [optax.clip_by_global_norm(opt.grad_clip)] if opt.grad_clip else []
  parts.append(optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, mu_dtype=opt.mu_dtype or None,
                           weight_decay=opt.weight_decay, mask=decay_mask))
  return optax.chain(*parts), lr
