"""BERT-style bidirectional encoder with the pretraining heads (masked LM, next sentence).

Embeddings (token + position + token type, then LayerNorm and dropout), post-LN blocks as in
the original BERT (`pre_norm=True` for the pre-LN variant, which adds a final LayerNorm), exact
GELU, and a pooler (dense + tanh on [CLS]). The masked-LM head (dense, GELU, LayerNorm, the tied
token embedding plus a bias) runs only at the masked positions, never over the full vocabulary
at every position. The blocks, attention, MLP and norms are the decoder's (models/layers.py).
"""
import jax
import jax.numpy as jnp
from flax import nnx

from models import axes
from models import layers

SIZES = {  # the published BERT grid (Turc et al. 2019) plus a smoke size
    "smoke": dict(num_layers=2, num_heads=2, d_model=64, max_len=128),
    "tiny": dict(num_layers=2, num_heads=2, d_model=128),
    "mini": dict(num_layers=4, num_heads=4, d_model=256),
    "small": dict(num_layers=4, num_heads=8, d_model=512),
    "medium": dict(num_layers=8, num_heads=8, d_model=512),
    "base": dict(num_layers=12, num_heads=12, d_model=768),     # 110M
    "large": dict(num_layers=24, num_heads=16, d_model=1024),   # 340M
}

DEFAULTS = dict(
    vocab_size=0, vocab_multiple=128, max_len=512, type_vocab_size=2,
    num_kv_heads=0, head_dim=0, d_ff=0,
    position="learned", rope_theta=10000.0,
    norm="layernorm", norm_eps=1e-12,
    mlp="gelu", gelu_approximate=False,
    use_bias=True, tie_embeddings=True,
    pre_norm=False,        # BERT is post-LN; True: pre-LN blocks and a final LayerNorm
    nsp_head=True,         # the next-sentence head (BERT); RoBERTa has none
    dropout=0.1, init_std=0.02, scale_residual_init=False,
    dtype="float32", param_dtype="float32", attention="",
    scan_layers=True, remat="none",
)


class Encoder(nnx.Module):
  """tokens [b, t] (+ type ids, padding mask) -> hidden states [b, t, d]; heads on top."""

  def __init__(self, cfg, *, rngs):
    dtype, param_dtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    init = layers.normal(cfg.init_std)
    norm = dict(kind=cfg.norm, eps=cfg.norm_eps, use_bias=cfg.use_bias, dtype=dtype, rngs=rngs)
    embed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.rate, self.scan_layers, self.remat = cfg.dropout, cfg.scan_layers, cfg.remat
    self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, **embed,
                           embedding_init=layers.partitioned(init, (axes.VOCAB, axes.EMBED)))
    self.pos_embed = None if cfg.position == "rope" else nnx.Embed(
        cfg.max_len, cfg.d_model, **embed,
        embedding_init=layers.partitioned(init, (axes.POSITIONS, axes.EMBED)))
    self.type_embed = nnx.Embed(cfg.type_vocab_size, cfg.d_model, **embed,
                                embedding_init=layers.partitioned(init, (axes.TYPES, axes.EMBED)))
    self.embed_norm = layers.Norm(cfg.d_model, **norm)
    self.dropout = nnx.Dropout(cfg.dropout)
    self.blocks = layers.make_blocks(cfg, causal=False, rngs=rngs)
    self.final_norm = layers.Norm(cfg.d_model, **norm) if cfg.pre_norm else None

    def dense(n_out, names):
      return nnx.Linear(cfg.d_model, n_out, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                        kernel_init=layers.partitioned(init, names),
                        bias_init=layers.partitioned(layers.zeros, names[1:]))

    self.pooler = dense(cfg.d_model, (axes.EMBED, axes.MLP))
    self.mlm_dense = dense(cfg.d_model, (axes.EMBED, axes.MLP))
    self.mlm_norm = layers.Norm(cfg.d_model, **norm)
    self.mlm_bias = nnx.Param(jnp.zeros((cfg.vocab_size,), param_dtype), out_sharding=(axes.VOCAB,))
    self.nsp = dense(2, (axes.EMBED, axes.CLASSES)) if cfg.nsp_head else None

  def __call__(self, tokens, *, type_ids=None, input_mask=None, dropout_key=None):
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    x = self.embed(tokens)
    if self.pos_embed is not None:
      x = x + self.pos_embed(positions)
    x = x + self.type_embed(jnp.zeros_like(tokens) if type_ids is None else type_ids)
    x = axes.constrain(self.embed_norm(x), layers.ACTIVATION)
    block_key = None
    if dropout_key is not None and self.rate:
      dropout_key, block_key = jax.random.split(dropout_key)
      x = self.dropout(x, deterministic=False, rngs=dropout_key)
    mask = None if input_mask is None else input_mask.astype(bool)[:, None, None, :]
    x = layers.run_blocks(self.blocks, x, positions=positions, mask=mask, dropout_key=block_key,
                          scan=self.scan_layers, remat=self.remat)
    return x if self.final_norm is None else self.final_norm(x)

  def pooled(self, hidden):
    return jnp.tanh(self.pooler(hidden[:, 0]))

  def mlm_logits(self, hidden, positions):
    """Vocabulary logits at `positions` [b, p] only: [b, p, vocab]."""
    # A one-hot matmul rather than a gather: it partitions cleanly on any mesh and its
    # transpose is a matmul too (p x t per example, small next to the blocks).
    select = jax.nn.one_hot(positions, hidden.shape[1], dtype=hidden.dtype)
    picked = jnp.einsum("bpt,btd->bpd", select, hidden)
    h = self.mlm_norm(jax.nn.gelu(self.mlm_dense(picked), approximate=False))
    logits = self.embed.attend(h) + self.mlm_bias[...].astype(h.dtype)
    return layers.replicate_last_axis(logits)

  def nsp_logits(self, pooled):
    return self.nsp(pooled)


def count_params(cfg, *, exclude_positions=True):
  return layers.count_params(lambda: Encoder(cfg, rngs=nnx.Rngs(0)), exclude_positions)
