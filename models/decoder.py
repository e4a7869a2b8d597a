"""GPT-style decoder-only Transformer (GPT-2 architecture, with modern switches).

GPT-2: learned positions, pre-LayerNorm, GELU MLP, tied input/output embeddings, dropout and
GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)).
Switches: position='rope', norm='rmsnorm', mlp='swiglu' or 'relu2', num_kv_heads < num_heads
(GQA), qk_norm, logit_softcap, zero_init_proj, z_loss, use_bias=False, tie_embeddings=False,
scan_layers with a remat policy.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from models import axes, layer_stack, layers

# Width, depth and heads of each named size. Configs name a size; they never repeat numbers.
SIZES = {
  "smoke": dict(num_layers=2, num_heads=4, d_model=64, max_len=128),
  "nano": dict(num_layers=6, num_heads=6, d_model=384, max_len=256),
  "small": dict(num_layers=12, num_heads=12, d_model=768, max_len=1024),  # 124M
  "medium": dict(num_layers=24, num_heads=16, d_model=1024, max_len=1024),  # 350M
  "large": dict(num_layers=36, num_heads=20, d_model=1280, max_len=1024),  # 774M
  "xl": dict(num_layers=48, num_heads=25, d_model=1600, max_len=1024),  # 1.5B
}

# Architecture switches and their GPT-2 values. 0 means "derive" (see `resolve`).
DEFAULTS = dict(
  vocab_size=0,  # 0: the tokenizer's size rounded up to vocab_multiple
  vocab_multiple=128,
  num_kv_heads=0,  # 0: num_heads (multi-head); fewer: grouped-query attention
  head_dim=0,  # 0: d_model // num_heads
  d_ff=0,  # 0: 4 * d_model (gelu) or 8/3 * d_model rounded to 64 (swiglu)
  position="learned",  # 'learned' or 'rope'
  rope_theta=10000.0,
  norm="layernorm",  # 'layernorm' or 'rmsnorm'
  norm_eps=1e-5,
  mlp="gelu",  # 'gelu', 'swiglu' or 'relu2' (relu(x)^2, same shapes as gelu)
  gelu_approximate=True,  # GPT-2's tanh approximation; False: exact erf GELU
  qk_norm=False,  # RMSNorm on each head's queries and keys, before RoPE
  logit_softcap=0.0,  # > 0: logits = cap * tanh(logits / cap) (Gemma 2 uses 30)
  zero_init_proj=False,  # attention's output and the MLP's last layer start at zero
  z_loss=0.0,  # training loss + z_loss * mean(logsumexp(logits)^2) (PaLM: 1e-4)
  use_bias=True,
  tie_embeddings=True,
  pre_norm=True,
  dropout=0.0,
  init_std=0.02,
  scale_residual_init=True,  # GPT-2: residual projections get init_std / sqrt(2 * layers)
  dtype="float32",  # compute dtype; 'bfloat16' on accelerators
  param_dtype="float32",
  attention="",  # cuDNN's flash kernel where it runs (GPU, bf16), else XLA's; or force one
  scan_layers=True,
  scan_unroll=0,  # layers per scan iteration; 0: all up to 12 layers without remat, else 1
  remat="none",  # 'none', 'full', 'dots' (save matmul outputs), 'offload' (to host)
)


class Decoder(nnx.Module):
  """tokens [b, t] -> logits [b, t, vocab] (compute dtype)."""

  def __init__(self, cfg, *, rngs):
    dtype, param_dtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    self.scan_layers = cfg.scan_layers
    self.unroll = layer_stack.scan_unroll(cfg)
    self.remat = cfg.remat
    self.rate = cfg.dropout
    self.logit_softcap = layers.switch(cfg, "logit_softcap")
    self.z_loss = layers.switch(cfg, "z_loss")
    self.embed = nnx.Embed(
      cfg.vocab_size,
      cfg.d_model,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
      embedding_init=layers.partitioned(layers.normal(cfg.init_std), (axes.VOCAB, axes.EMBED)),
    )
    layers.check_option("position", cfg.position)
    self.pos_embed = (
      None
      if cfg.position == "rope"
      else nnx.Embed(
        cfg.max_len,
        cfg.d_model,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
        embedding_init=layers.partitioned(
          layers.normal(cfg.init_std), (axes.POSITIONS, axes.EMBED)
        ),
      )
    )
    self.dropout = nnx.Dropout(cfg.dropout)

    self.blocks = layer_stack.make_blocks(cfg, causal=True, rngs=rngs)
    self.final_norm = layers.Norm(
      cfg.d_model, kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=dtype, rngs=rngs
    )
    self.head = (
      None
      if cfg.tie_embeddings
      else nnx.Linear(
        cfg.d_model,
        cfg.vocab_size,
        use_bias=False,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=layers.partitioned(layers.normal(cfg.init_std), (axes.EMBED, axes.VOCAB)),
        rngs=rngs,
      )
    )

  def __call__(self, tokens, *, positions=None, segment_ids=None, dropout_key=None, cache=None):
    """With a KV cache (models/decode.py), `positions` are the tokens' absolute positions
    (their cache slots) and the result is (logits, updated cache)."""
    b, t = tokens.shape
    x = self.embed(tokens)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
      if self.pos_embed is not None:
        x = x + layers.embed_prefix(self.pos_embed, t)
    elif self.pos_embed is not None:
      x = x + self.pos_embed(positions)
    x = axes.constrain(x, axes.ACTIVATION)
    mask = None
    if segment_ids is not None:  # packed documents attend only within themselves
      mask = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
    if cache is not None:
      x, cache = layer_stack.run_blocks_cached(
        self.blocks, x, positions=positions, cache=cache, scan=self.scan_layers, unroll=self.unroll
      )
      return self.logits(x), cache
    block_key = None
    if dropout_key is not None and self.rate:
      dropout_key, block_key = jax.random.split(dropout_key)
      x = self.dropout(x, deterministic=False, rngs=dropout_key)
    x = layer_stack.run_blocks(
      self.blocks,
      x,
      positions=positions,
      mask=mask,
      dropout_key=block_key,
      scan=self.scan_layers,
      remat=self.remat,
      unroll=self.unroll,
    )
    return self.logits(x)

  def logits(self, x):
    x = self.final_norm(x)
    logits = self.head(x) if self.head is not None else self.embed.attend(x)
    logits = layers.soft_cap(logits, self.logit_softcap)
    return axes.constrain(logits, (axes.BATCH, axes.LENGTH, axes.VOCAB))


def count_params(cfg, *, exclude_positions=True):
  """Parameter count from shapes alone (no allocation)."""
  return layers.count_params(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), exclude_positions)
