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

from models import axes, layer_stack, layers, model_config

# Width, depth and heads of each named size. Configs name a size; they never repeat numbers.
SIZES = {
  "smoke": dict(num_layers=2, num_heads=4, d_model=64, max_len=128),
  "nano": dict(num_layers=6, num_heads=6, d_model=384, max_len=256),
  "small": dict(num_layers=12, num_heads=12, d_model=768, max_len=1024),  # 124M
  "medium": dict(num_layers=24, num_heads=16, d_model=1024, max_len=1024),  # 350M
  "large": dict(num_layers=36, num_heads=20, d_model=1280, max_len=1024),  # 774M
  "xl": dict(num_layers=48, num_heads=25, d_model=1600, max_len=1024),  # 1.5B
  # GPT-3 (Brown et al. 2020, Table 2.1): context 2048, d_ff = 4 * d_model (configs/gpt3.py)
  "gpt3_small": dict(num_layers=12, num_heads=12, d_model=768, max_len=2048),  # 125M
  "gpt3_medium": dict(num_layers=24, num_heads=16, d_model=1024, max_len=2048),  # 350M
  "gpt3_large": dict(num_layers=24, num_heads=16, d_model=1536, max_len=2048),  # 760M
  "gpt3_xl": dict(num_layers=24, num_heads=24, d_model=2048, max_len=2048),  # 1.3B
  "gpt3_2.7b": dict(num_layers=32, num_heads=32, d_model=2560, max_len=2048),
  "gpt3_6.7b": dict(num_layers=32, num_heads=32, d_model=4096, max_len=2048),
  # the table's 5140 is not a multiple of its 40 heads (128.5 each): 5120, 40 heads of 128, as
  # the paper's own head size (d_head 128) and every reproduction (OPT-13B) have it; 12.9B
  "gpt3_13b": dict(num_layers=40, num_heads=40, d_model=5120, max_len=2048),
  "gpt3_175b": dict(num_layers=96, num_heads=96, d_model=12288, max_len=2048),
}

# The architecture's fields and their GPT-2 values: models/model_config.py.
DEFAULTS = model_config.defaults()


class Decoder(nnx.Module):
  """tokens [b, t] -> logits [b, t, vocab] (compute dtype)."""

  def __init__(self, cfg, *, rngs):
    dtype, param_dtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    self.scan_layers = cfg.scan_layers
    self.unroll = layer_stack.scan_unroll(cfg)
    self.per_layer = layers.per_layer(cfg)  # the blocks' per-layer switches
    self.remat = cfg.remat
    self.rate = cfg.dropout
    self.logit_softcap = cfg.logit_softcap
    self.z_loss = cfg.z_loss
    self.embed = nnx.Embed(
      cfg.vocab_size,
      cfg.d_model,
      dtype=dtype,
      param_dtype=param_dtype,
      rngs=rngs,
      embedding_init=layers.partitioned(layers.normal(cfg.init_std), (axes.VOCAB, axes.EMBED)),
    )
    model_config.check_option("position", cfg.position)
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
      mask = layers.segment_mask(segment_ids)
    if cache is not None:
      x, cache = layer_stack.run_blocks_cached(
        self.blocks,
        x,
        positions=positions,
        cache=cache,
        scan=self.scan_layers,
        unroll=self.unroll,
        per_layer=self.per_layer,
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
      per_layer=self.per_layer,
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
