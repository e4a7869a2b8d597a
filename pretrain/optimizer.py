"""AdamW with weight decay on matrices only, global-norm clipping and a warmup+decay schedule."""
import jax
import optax


def schedule(opt, total_steps):
  """Linear warmup from 0 to opt.lr, then cosine/linear decay to opt.min_lr (or constant)."""
  warmup = min(opt.warmup_steps, total_steps)
  if opt.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.lr, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=opt.min_lr)
  decay = {
      "linear": optax.linear_schedule(opt.lr, opt.min_lr, max(1, total_steps - warmup)),
      "constant": optax.constant_schedule(opt.lr),
  }
  if opt.schedule not in decay:
    raise ValueError(f"config.optimizer.schedule: unknown {opt.schedule!r}; "
                     "use 'cosine', 'linear' or 'constant'")
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
