"""The model's CPU-only kernels: what XLA:CPU runs faster than the accelerator program.

models/layers.py is written for accelerators. Where the model is built for a CPU (`active()`),
it calls into this module at one seam, `cpu_kernels.*`:
- `dot_general`, `rows` and `mlp`: dense layers on [batch * length, features] activations with
  hand-written gradients (their weight gradients run as plain matmuls, the MLP's activation is
  recomputed rather than kept);
- `attention`: heads-major softmax attention by blocks of queries, skipping the blocks above a
  causal diagonal.
Off CPU (`built_for('gpu')`, the ahead-of-time check) each is the plain call. Each pays 7-8% of
a train step on CPU where it acts (benchmarks/RESULTS.md, "CPU kernels"); remove it when not.
"""

import contextlib
import functools
import math

import jax
import jax.numpy as jnp

_TARGETS: list[str] = []  # the backends models are being built for, where not the one they run on


def target_backend():
  """The backend the model is built for: where it runs, unless inside `built_for`."""
  return _TARGETS[-1] if _TARGETS else jax.default_backend()


@contextlib.contextmanager
def built_for(backend):
  """Builds and traces models inside as for `backend` (e.g. 'gpu'): the ahead-of-time check
  (pretrain/aot.py) compiles on CPU devices that stand in for accelerators, and must see the
  program those would run, not the CPU's (`active`)."""
  _TARGETS.append(backend)
  try:
    yield
  finally:
    _TARGETS.pop()


def active():
  """Whether the model being built takes these kernels: it is built for a CPU. (GPUs and TPUs
  take [batch, length, features] as it is, which keeps a sequence-sharded length axis whole to
  the partitioner.)"""
  return target_backend() == "cpu"


def attention(q, k, v, *, mask=None, causal=False):
  """Softmax attention as jax.nn.dot_product_attention computes it with XLA's kernel, with the
  heads moved ahead of the length axes once, so that both products and their gradients are
  batched over leading axes, and the 1/sqrt(head_dim) scale applied to the queries rather
  than to the logits. Causal self-attention over more than _CAUSAL_BLOCK positions goes by
  blocks of queries, each against the keys up to its last position, so the blocks above the
  diagonal, all masked, are never computed. Its gradient is written out (_attention_bwd): the
  backward pass keeps the probabilities, not the logits' exponentials as well.
  q: [b, t, heads, d]; k, v: [b, s, kv_heads, d]; mask: [b, 1, t, s] or broadcastable."""
  b, t, heads, d = q.shape
  groups = k.shape[2]
  q = q.reshape(b, t, groups, heads // groups, d).transpose(0, 2, 3, 1, 4)  # [b, g, r, t, d]
  k, v = (a.transpose(0, 2, 1, 3) for a in (k, v))  # [b, g, s, d]
  q = q * jnp.asarray(d**-0.5, q.dtype)
  mask = None if mask is None else mask[:, :, None]  # [b, 1, 1, t, s]: the same for every head
  out = _blocked_attention(_query_blocks(t, k.shape[2], causal), causal, q, k, v, mask)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, heads, d)


_CAUSAL_BLOCK = 64  # at block 256, 4 blocks: faster than 1 or 2 (benchmarks/RESULTS.md)


def _query_blocks(t, s, causal):
  """(first, end) of each block of queries; block i attends to the keys before its end."""
  if causal and t == s and t > _CAUSAL_BLOCK:
    return tuple((i, min(i + _CAUSAL_BLOCK, t)) for i in range(0, t, _CAUSAL_BLOCK))
  return ((0, t),)


def _keep(mask, causal, first, end, keys):
  """Which logits of the queries first:end against the first `keys` keys count (None: all)."""
  keep = None
  if mask is not None:
    keep = mask[..., first:end, :] if mask.shape[-2] > 1 else mask
    keep = keep[..., :keys] if keep.shape[-1] > 1 else keep
  if causal:
    below = jnp.arange(keys)[None, :] <= first + jnp.arange(end - first)[:, None]
    keep = below if keep is None else keep & below
  return keep


def _probabilities(q, k, keep):
  logits = jnp.einsum("bgrtd,bgsd->bgrts", q, k).astype(jnp.float32)
  if keep is not None:
    logits = jnp.where(keep, logits, jnp.finfo(jnp.float32).min)
  return jax.nn.softmax(logits, axis=-1)


def _each_block(blocks, q, k, v, mask, causal):
  """(block's queries, keys and values it attends to, its keep mask) per block of queries."""
  for first, end in blocks:
    keys = end if len(blocks) > 1 else k.shape[2]
    yield (
      q[:, :, :, first:end],
      k[:, :, :keys],
      v[:, :, :keys],
      _keep(mask, causal, first, end, keys),
    )


def _join(blocks):
  return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _blocked_attention(blocks, causal, q, k, v, mask):
  return _attention_fwd(blocks, causal, q, k, v, mask)[0]


def _attention_fwd(blocks, causal, q, k, v, mask):
  outs, probs = [], []
  for q_i, k_i, v_i, keep in _each_block(blocks, q, k, v, mask, causal):
    probs.append(_probabilities(q_i, k_i, keep))
    outs.append(jnp.einsum("bgrts,bgsd->bgrtd", probs[-1].astype(v.dtype), v_i))
  return _join(outs), (q, k, v, mask, probs)


def _attention_bwd(blocks, causal, residuals, g):
  """The softmax's gradient from its probabilities alone: dlogits = p * (dp - sum(dp * p))."""
  q, k, v, mask, probs = residuals
  if len(blocks) > 1:
    # Sliced again here, after the cotangent has come: otherwise XLA merges these slices with
    # the forward pass's, and holds every layer's from there to its backward.
    q, k, v = (_after(a, g) for a in (q, k, v))
  dq, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
  parts = _each_block(blocks, q, k, v, mask, causal)
  for (first, end), p, (q_i, k_i, v_i, keep) in zip(blocks, probs, parts):
    g_i, keys = g[:, :, :, first:end], k_i.shape[2]
    dv = dv.at[:, :, :keys].add(jnp.einsum("bgrts,bgrtd->bgsd", p.astype(v.dtype), g_i))
    dp = jnp.einsum("bgrtd,bgsd->bgrts", g_i, v_i).astype(jnp.float32)
    ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
    if keep is not None:  # a row with every key masked has uniform p, and no gradient
      ds = jnp.where(keep, ds, 0.0)
    ds = ds.astype(q.dtype)
    dq.append(jnp.einsum("bgrts,bgsd->bgrtd", ds, k_i))
    dk = dk.at[:, :, :keys].add(jnp.einsum("bgrts,bgrtd->bgsd", ds, q_i))
  return _join(dq), dk.astype(k.dtype), dv.astype(v.dtype), None


_blocked_attention.defvjp(_attention_fwd, _attention_bwd)


def _affine(act, xs, w, b=None):
  y = _activated(act, xs) @ w
  return y if b is None else y + b


def _activated(act, xs):
  return xs[0] if act is None else act(*xs)


# act(*xs) @ w (+ b) on 2-D operands (xs[0] @ w where act is None), keeping only xs, w and b
# for the backward pass: an MLP's activation is recomputed there rather than kept.
_flat_matmul = jax.custom_vjp(_affine, nondiff_argnums=(0,))


def _flat_matmul_fwd(act, xs, w, b=None):
  return _affine(act, xs, w, b), (xs, w, b)


def _flat_matmul_bwd(act, residuals, g):
  xs, w, b = residuals
  if act is not None:
    # Recomputed once the cotangent has come: XLA:CPU's scheduler would otherwise compute
    # every layer's activation (which needs only xs) at the start of the backward pass, where
    # they would all wait for their layer's turn.
    xs = tuple(_after(x, g) for x in xs)
  x, act_vjp = jax.vjp(lambda *xs: _activated(act, xs), *xs)
  # The weight gradient x.T @ g contracts the rows of x and g; XLA:CPU runs that form (both
  # operands contracted on axis 0) through Eigen, well under a plain matmul's rate. The
  # narrower of x and g is transposed into a real copy (the barriers keep the simplifier from
  # folding the transposes back into the dot) and the product runs as a plain matmul, faster
  # with the copy included (benchmarks/RESULTS.md).
  barrier = jax.lax.optimization_barrier
  if x.shape[1] <= g.shape[1]:
    dw = barrier(x.T) @ g
  else:
    dw = barrier(barrier(g.T) @ x).T
  db = None if b is None else jnp.sum(g, axis=0)
  # The layer's weight (and bias) gradients before the layers below it: left free, XLA:CPU's
  # scheduler computes every layer's at the end of the backward pass, where a stacked model's
  # gradients are concatenated, and holds what each needs until then.
  dx = _after(g @ w.T, dw)
  return act_vjp(dx if db is None else _after(dx, db)), dw, db


def _after(x, y):
  """x, computed after y: x plus a zero taken from y. (XLA:CPU drops optimization barriers
  before it schedules, so only a data dependency orders its program.)"""
  return x + (0 * y[(0,) * y.ndim]).astype(x.dtype)


_flat_matmul.defvjp(_flat_matmul_fwd, _flat_matmul_bwd)


def dot_general(x, kernel, dimension_numbers, precision=None, **kwargs):
  """The dense layers' dot_general: lax.dot_general, except on `active()` activations
  ([batch * length, features...] contracted with the kernel's leading axes), which take a
  2-D matmul whose weight gradient runs as a plain matmul on CPU (_flat_matmul_bwd)."""
  (contract_x, contract_k), batch_dims = dimension_numbers
  n = len(contract_x)
  if (
    active()
    and precision is None
    and not any(batch_dims)
    and x.ndim == n + 1
    and tuple(contract_x) == tuple(range(1, n + 1))
    and tuple(contract_k) == tuple(range(n))
    and all(v is None for v in kwargs.values())
  ):
    y = _flat_matmul(
      None, (x.reshape(x.shape[0], -1),), kernel.reshape(math.prod(kernel.shape[:n]), -1)
    )
    return y.reshape(x.shape[0], *kernel.shape[n:])
  return jax.lax.dot_general(x, kernel, dimension_numbers, precision=precision, **kwargs)


def rows(layer, x, in_dims=1):
  """layer(x) over x's last `in_dims` axes, on [batch * length, ...] where `active()`."""
  if not active():
    return layer(x)
  lead = x.shape[:-in_dims]
  y = layer(x.reshape(-1, *x.shape[len(lead) :]))
  return y.reshape(*lead, *y.shape[1:])


def mlp(inputs, act, proj, x):
  """proj(act(*(dense(x) for dense in inputs))) on [batch * length, features] through
  _flat_matmul: the backward pass keeps the activation's inputs and recomputes its output, a
  [tokens, d_ff] array per layer less to hold, and takes each bias's gradient with its weight's.
  inputs: the nnx.Linear layers into the activation; proj: the nnx.Linear out of it."""

  def apply(x):
    hs = tuple(_activated_linear(dense, None, (x,)) for dense in inputs)
    return _activated_linear(proj, act, hs)

  return rows(apply, x)


def _activated_linear(linear, act, hs):
  """linear(act(*hs)) for an nnx.Linear on 2-D inputs (linear(hs[0]) where act is None)."""
  kernel = linear.kernel[...]
  bias = linear.bias[...] if linear.bias is not None else None
  *hs, kernel, bias = linear.promote_dtype((*hs, kernel, bias), dtype=linear.dtype)
  return _flat_matmul(act, tuple(hs), kernel, bias)
