"""Layers shared by the decoder (GPT) and the encoder (BERT): attention, MLP, norms, RoPE.

Every parameter carries logical axis names from models/axes.py. Parameters are created in
`param_dtype` (float32); matmuls run in the compute `dtype` (bfloat16 on accelerators).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from models import axes, cpu_kernels, model_config

# Parameters carry logical axis names only; the trainer turns them into shardings explicitly
# (eval_shape -> NamedShardings -> jit(init, out_shardings)), so Flax's eager sharding of
# variables at construction is off wherever the models are.
nnx.use_eager_sharding(False)

normal = nnx.initializers.normal
zeros = nnx.initializers.zeros_init()
ones = nnx.initializers.ones_init()


def partitioned(init, names):
  return nnx.with_partitioning(init, names)


def dtype_of(name):
  return jnp.dtype(name)


class Norm(nnx.Module):
  """LayerNorm (GPT-2/BERT) or RMSNorm (LLaMA-style), chosen by `kind`."""

  def __init__(self, features, *, kind, eps, use_bias, dtype, rngs):
    model_config.check_option("norm", kind)
    if kind == "layernorm":
      self.norm = nnx.LayerNorm(
        features,
        epsilon=eps,
        use_bias=use_bias,
        dtype=dtype,
        rngs=rngs,
        scale_init=partitioned(ones, (axes.EMBED,)),
        bias_init=partitioned(zeros, (axes.EMBED,)),
      )
    else:
      self.norm = nnx.RMSNorm(
        features, epsilon=eps, dtype=dtype, rngs=rngs, scale_init=partitioned(ones, (axes.EMBED,))
      )

  def __call__(self, x):
    return self.norm(x)


def _table(embed):
  """An nnx.Embed's table in its compute dtype, as its own lookup promotes it."""
  (table,) = embed.promote_dtype((embed.embedding[...],), dtype=embed.dtype, inexact=False)
  return table


def embed_rows(embed, ids):
  """`embed(ids)` for a table of a few rows (BERT's token types) as a one-hot matmul, whose
  gradient is a matmul: a gather's is a scatter-add, which a GPU serialises when thousands of
  tokens update the same two rows (benchmarks/RESULTS.md, GPU)."""
  table = _table(embed)
  return jax.nn.one_hot(ids, table.shape[0], dtype=table.dtype) @ table


def embed_prefix(embed, length):
  """The first `length` rows of a position table, [1, length, d]: the lookup of positions
  0..length-1 in every row, without a gather (whose gradient would be a scatter-add)."""
  return _table(embed)[None, :length]


def replicate_last_axis(x):
  """Keeps the last (vocabulary) axis of x whole on every device, under the trainer's mesh.

  Used on the masked-LM logits, which are small ([batch, predictions, vocab]). With the vocab
  axis sharded over 'tensor' on a data x fsdp x tensor mesh, XLA's partitioner (jax 0.10, CPU)
  mis-partitions the backward of a weighted log-sum-exp over that axis; gathering the vocab
  axis first avoids it (tests/pretrain/test_bert.py compares 8 devices with 1).
  """
  return axes.constrain(x, (axes.BATCH,) + (None,) * (x.ndim - 1))


def segment_mask(segment_ids):
  """[b, 1, t, t]: True where query and key are in the same segment of a packed row."""
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def band(positions, window, causal):
  """[b, 1, t, t]: True where a query may attend a key of a local layer: the last `window`
  positions (causal, itself included) or window // 2 on each side."""
  offset = positions[:, None, :, None] - positions[:, None, None, :]  # query - key
  return (offset >= 0) & (offset < window) if causal else jnp.abs(offset) <= window // 2


def per_layer(cfg):
  """The blocks' per-layer switches, ((name, a bool per layer), ...) (hashable: a module's
  static attribute), given to each block as keyword arguments: `local`, whether it attends within cfg.attention_window (only with a window);
  `bare`, whether it goes without its pre-attention norm (only with first_block_norm off)."""
  out = {}
  if cfg.attention_window:
    every = cfg.global_every
    out["local"] = tuple(not (every and i % every == 0) for i in range(cfg.num_layers))
  if not cfg.first_block_norm:
    out["bare"] = tuple(i == 0 for i in range(cfg.num_layers))
  return tuple(out.items())


def rope(x, positions, theta):
  """Rotary position embedding on [batch, length, heads, head_dim] (rotate-half layout)."""
  half = x.shape[-1] // 2
  freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions[:, :, None, None].astype(jnp.float32) * freq  # [b, t, 1, half]
  sin, cos = jnp.sin(angle), jnp.cos(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nnx.Module):
  """Multi-head attention with grouped-query heads, through jax.nn.dot_product_attention.

  `implementation`: 'xla' forces the XLA kernel and 'cudnn' cuDNN's fused (flash) kernel on
  GPUs; None takes cuDNN's where it runs (a GPU, 16-bit inputs, head_dim a multiple of 8 up to
  128; benchmarks/RESULTS.md, GPU), cpu_kernels.attention on CPU, and XLA's elsewhere.
  """

  def __init__(
    self, *, d_model, num_heads, num_kv_heads, head_dim, use_bias, rope_theta, init_std,
    out_init, dtype, param_dtype, implementation, rngs, qk_norm=False, norm_eps=1e-6,
    window=0, rope_theta_local=0.0,
  ):  # fmt: skip
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
    self.rope_theta = rope_theta
    self.window, self.rope_theta_local = window, rope_theta_local or rope_theta
    self.implementation = implementation
    self.dtype = dtype

    def proj(heads, head_axis):
      return nnx.LinearGeneral(
        d_model,
        (heads, head_dim),
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        dot_general=cpu_kernels.dot_general,
        kernel_init=partitioned(normal(init_std), (axes.EMBED, head_axis, axes.HEAD_DIM)),
        bias_init=partitioned(zeros, (head_axis, axes.HEAD_DIM)),
        rngs=rngs,
      )

    self.query = proj(num_heads, axes.HEADS)
    self.key = proj(num_kv_heads, axes.KV_HEADS)
    self.value = proj(num_kv_heads, axes.KV_HEADS)
    self.out = nnx.LinearGeneral(
      (num_heads, head_dim),
      d_model,
      axis=(-2, -1),
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      dot_general=cpu_kernels.dot_general,
      kernel_init=partitioned(out_init, (axes.HEADS, axes.HEAD_DIM, axes.EMBED)),
      bias_init=partitioned(zeros, (axes.EMBED,)),
      rngs=rngs,
    )

    # QK-norm: RMSNorm over each head's queries and keys (one scale per head_dim entry, shared
    # by the heads), before RoPE; bounds the attention logits
    def qk_norm_layer():
      return nnx.RMSNorm(
        head_dim,
        epsilon=norm_eps,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
        scale_init=partitioned(ones, (axes.HEAD_DIM,)),
      )

    self.q_norm = qk_norm_layer() if qk_norm else None
    self.k_norm = qk_norm_layer() if qk_norm else None

  def __call__(self, x, *, positions, causal, mask=None, cache=None, local=None):
    """x: [b, t, d]; mask: optional boolean [b, 1, t, t] (True = may attend). `local` (a bool,
    or a traced one in a scanned stack): this layer attends within the window, with the local
    RoPE base. The window is a mask on the dense computation, whatever the kernel.

    With a KV cache (k, v), each [b, cache length, kv_heads, head_dim], the new keys and
    values are written at their positions (slot = position, per row) and the queries attend
    to every slot up to their own position: prefill (t = the prompt) and decoding (t = 1) are
    the same code. Returns (output, updated cache) then.
    """
    q, k, v = (cpu_kernels.rows(proj, x) for proj in (self.query, self.key, self.value))
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    local = local if self.window else None
    if self.rope_theta:
      theta = (
        self.rope_theta
        if local is None
        else jnp.where(local, self.rope_theta_local, self.rope_theta)
      )
      q, k = rope(q, positions, theta), rope(k, positions, theta)
    if cache is not None:
      return self._cached(q, k, v, positions, cache, local)
    if local is not None:
      near = band(positions, self.window, causal) | ~jnp.asarray(local)
      mask = near if mask is None else mask & near
    implementation = self.implementation
    cudnn_runs = (
      jax.default_backend() == "gpu"
      and self.dtype in (jnp.bfloat16, jnp.float16)
      and self.head_dim % 8 == 0
      and self.head_dim <= 128
    )
    if implementation in (None, "cudnn"):
      implementation = "cudnn" if cudnn_runs else None  # None: XLA's
    if implementation == "cudnn" and mask is not None:
      # cuDNN takes a mask only at its full [b, 1, t_q, t_k] shape, not a padding mask's
      # broadcast [b, 1, 1, t_k]
      mask = jnp.broadcast_to(mask, (mask.shape[0], 1, q.shape[1], k.shape[1]))
    q, k, v = (a.astype(self.dtype) for a in (q, k, v))
    if cpu_kernels.active() and implementation is None:
      y = cpu_kernels.attention(q, k, v, mask=mask, causal=causal)
    else:
      y = jax.nn.dot_product_attention(
        q, k, v, mask=mask, is_causal=causal, implementation=implementation
      )
    return cpu_kernels.rows(self.out, y, in_dims=2)

  def _cached(self, q, k, v, positions, cache, local):
    rows = jnp.arange(q.shape[0])[:, None]
    cache_k = cache[0].at[rows, positions].set(k.astype(cache[0].dtype))
    cache_v = cache[1].at[rows, positions].set(v.astype(cache[1].dtype))
    cache_k, cache_v = (axes.constrain(c, axes.CACHE[1:]) for c in (cache_k, cache_v))
    slots = jnp.arange(cache_k.shape[1])
    offset = positions[:, None, :, None] - slots[None, None, None, :]  # [b, 1, t, slots]
    mask = offset >= 0
    if local is not None:
      mask &= (offset < self.window) | ~jnp.asarray(local)
    y = jax.nn.dot_product_attention(
      q.astype(self.dtype), cache_k.astype(self.dtype), cache_v.astype(self.dtype), mask=mask
    )
    return cpu_kernels.rows(self.out, y, in_dims=2), (cache_k, cache_v)


class MLP(nnx.Module):
  """GELU MLP (GPT-2/BERT), SwiGLU (gated SiLU, LLaMA-style), GeGLU (gated GELU, ModernBERT)
  or ReLU² (relu(x)^2: Primer, modded-nanogpt)."""

  def __init__(
    self,
    *,
    d_model,
    d_ff,
    kind,
    use_bias,
    init_std,
    out_init,
    dtype,
    param_dtype,
    rngs,
    gelu_approximate=True,
  ):
    model_config.check_option("mlp", kind)
    self.kind = kind
    self.gelu_approximate = gelu_approximate

    def dense(n_in, n_out, names, init):
      return nnx.Linear(
        n_in,
        n_out,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        dot_general=cpu_kernels.dot_general,
        kernel_init=partitioned(init, names),
        bias_init=partitioned(zeros, names[1:]),
        rngs=rngs,
      )

    self.fc = dense(d_model, d_ff, (axes.EMBED, axes.MLP), normal(init_std))
    if kind in GATED:
      self.gate = dense(d_model, d_ff, (axes.EMBED, axes.MLP), normal(init_std))
    self.proj = dense(d_ff, d_model, (axes.MLP, axes.EMBED), out_init)

  def __call__(self, x):
    inputs = (self.gate, self.fc) if self.kind in GATED else (self.fc,)
    gelu, geglu = (_gelu_tanh, _geglu_tanh) if self.gelu_approximate else (_gelu_erf, _geglu_erf)
    act = {"swiglu": _swiglu, "relu2": _relu2, "geglu": geglu}.get(self.kind, gelu)
    if cpu_kernels.active():
      return cpu_kernels.mlp(inputs, act, self.proj, x)
    hs = tuple(dense(x) for dense in inputs)
    if self.kind == "gelu":
      # Only the GELU's input is kept for the backward pass (with its output, which the
      # projection keeps): the tanh form would keep a third [tokens, d_ff] array per layer
      act = jax.checkpoint(act)
    return self.proj(act(*hs))


def _gelu_tanh(h):
  return jax.nn.gelu(h, approximate=True)


def _gelu_erf(h):
  return jax.nn.gelu(h, approximate=False)


def _relu2(h):
  return jnp.square(jax.nn.relu(h))


def _swiglu(gate, h):
  return jax.nn.silu(gate) * h


def _geglu_tanh(gate, h):
  return _gelu_tanh(gate) * h


def _geglu_erf(gate, h):
  return _gelu_erf(gate) * h


GATED = ("swiglu", "geglu")  # MLPs with a gate: act(gate(x)) * fc(x)


def residual_std(init_std, num_layers):
  """GPT-2's scaled init of the projections that write into the residual stream."""
  return init_std / math.sqrt(2 * num_layers)


def out_init(cfg):
  """The init of the projections that write into the residual stream (attention's output, the
  MLP's last layer): zero with zero_init_proj (each block starts as the identity), else
  N(0, init_std), scaled by 1/sqrt(2 * layers) with scale_residual_init (GPT-2)."""
  if cfg.zero_init_proj:
    return zeros
  if cfg.scale_residual_init:
    return normal(residual_std(cfg.init_std, cfg.num_layers))
  return normal(cfg.init_std)


def soft_cap(logits, cap):
  """cap * tanh(logits / cap) in float32 (Gemma 2's logit soft-capping); cap 0: unchanged."""
  if not cap:
    return logits
  return cap * jnp.tanh(logits.astype(jnp.float32) / cap)


class TransformerBlock(nnx.Module):
  """Attention + MLP with residuals; pre-LN (GPT-2) or post-LN (original BERT)."""

  def __init__(self, cfg, *, causal, rngs):
    dtype, param_dtype = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
    norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=dtype)
    self.causal = causal
    self.pre_norm = cfg.pre_norm
    self.rate = cfg.dropout
    self.norm1 = Norm(cfg.d_model, **norm, rngs=rngs)
    self.attn = Attention(
      d_model=cfg.d_model,
      num_heads=cfg.num_heads,
      num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      use_bias=cfg.use_bias,
      rope_theta=cfg.rope_theta if cfg.position == "rope" else 0.0,
      init_std=cfg.init_std,
      out_init=out_init(cfg),
      dtype=dtype,
      param_dtype=param_dtype,
      implementation=cfg.attention or None,
      rngs=rngs,
      qk_norm=cfg.qk_norm,
      norm_eps=cfg.norm_eps,
      window=cfg.attention_window,
      rope_theta_local=cfg.rope_theta_local,
    )
    self.norm2 = Norm(cfg.d_model, **norm, rngs=rngs)
    self.mlp = MLP(
      d_model=cfg.d_model,
      d_ff=cfg.d_ff,
      kind=cfg.mlp,
      use_bias=cfg.use_bias,
      init_std=cfg.init_std,
      out_init=out_init(cfg),
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
      gelu_approximate=cfg.gelu_approximate,
    )
    self.dropout = nnx.Dropout(cfg.dropout)

  def __call__(self, x, *, positions, mask, key, cache=None, local=None, bare=None):
    """x: [b, t, d] -> [b, t, d]; with a KV cache (decoding), (x, updated cache). `local`:
    this layer's attention is windowed (Attention); `bare`: no norm before attention (a bool,
    traced in a scanned stack; per_layer)."""
    keys = (None, None) if key is None else tuple(jax.random.split(key))
    causal = self.causal or cache is not None
    h = self._in(self.norm1, x)
    y = self.attn(
      h if bare is None else jnp.where(bare, x, h),
      positions=positions,
      causal=causal,
      mask=mask,
      cache=cache,
      local=local,
    )
    if cache is not None:
      y, cache = y
    x = self._residual(self.norm1, x, y, keys[0])
    x = self._residual(self.norm2, x, self.mlp(self._in(self.norm2, x)), keys[1])
    return x if cache is None else (x, cache)

  def _in(self, norm, x):
    """A sublayer's input: normalised first in a pre-norm block (GPT-2), as it is in post-norm."""
    return norm(x) if self.pre_norm else x

  def _residual(self, norm, x, y, key):
    """x + dropout(y), normalised after the sum in a post-norm block (original BERT)."""
    if key is not None and self.rate:
      y = self.dropout(y, deterministic=False, rngs=key)
    return x + y if self.pre_norm else norm(x + y)


def count_params(make_model, exclude_positions=True):
  """Parameters of the model `make_model()` builds, from shapes alone (no allocation);
  without the learned position table, as in the MFU formula."""
  params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(make_model), nnx.Param))
  return param_count(params, exclude_positions)


def param_count(params, exclude_positions=True):
  """The size of a parameter tree (arrays or shapes), without the learned position table."""
  total = sum(x.size for x in jax.tree.leaves(params))
  if exclude_positions and "pos_embed" in params:
    total -= sum(x.size for x in jax.tree.leaves(params["pos_embed"]))
  return total
