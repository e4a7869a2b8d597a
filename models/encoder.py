"""BERT-style bidirectional encoder: one backbone, and the models that put heads on it.

`Backbone`: embeddings (token + position + token type, then LayerNorm and dropout), post-LN
blocks as in the original BERT (`pre_norm=True` for the pre-LN variant, which adds a final
LayerNorm) with exact GELU; it returns the hidden states. The blocks, attention, MLP and norms
are the decoder's (models/layers.py).

The models add their heads beside the backbone's parameters, so every model's parameter tree
holds the backbone's entries (BACKBONE) under the same names, and a fine-tuning run loads them
from a pretraining checkpoint (pretrain/state/resume.py, `init_from`):
  * `Encoder` (pretraining): the pooler (dense + tanh on [CLS]), the masked-LM head (dense,
    GELU, LayerNorm, the tied token embedding plus a bias; run only at the masked positions,
    never over the full vocabulary at every position) and BERT's next-sentence head;
  * `SequenceClassifier`: the pooler and a dense layer to `num_labels` (1: regression);
  * `TokenClassifier`: a dense layer to `num_labels` at every position (NER);
  * `SpanClassifier`: start and end logits at every position (extractive QA).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from models import axes, layer_stack, layers, model_config

SIZES = {  # the published BERT grid (Turc et al. 2019) plus a smoke size
  "smoke": dict(num_layers=2, num_heads=2, d_model=64, max_len=128),
  "tiny": dict(num_layers=2, num_heads=2, d_model=128),
  "mini": dict(num_layers=4, num_heads=4, d_model=256),
  "small": dict(num_layers=4, num_heads=8, d_model=512),
  "medium": dict(num_layers=8, num_heads=8, d_model=512),
  "base": dict(num_layers=12, num_heads=12, d_model=768),  # 110M
  "large": dict(num_layers=24, num_heads=16, d_model=1024),  # 340M
}

# BERT's values of the architecture's fields (models/model_config.py), where not GPT-2's.
DEFAULTS = model_config.defaults(
  max_len=512,
  type_vocab_size=2,
  nsp_head=True,  # RoBERTa has none
  num_labels=0,  # the task head's outputs (fine-tuning); 1: a regression score
  classifier_pooling="cls",
  norm_eps=1e-12,
  gelu_approximate=False,
  pre_norm=False,  # BERT is post-LN; True: pre-LN blocks and a final LayerNorm
  dropout=0.1,
  scale_residual_init=False,
)


# ModernBERT's architecture (Warner et al. 2024, arXiv 2412.13663; the released
# modernbert-base-pretrain.yaml): RoPE, GeGLU, pre-LN without biases and a final norm, the
# embedding's norm standing in for the first block's, no token types, local attention over 128
# positions (+-64) with every third layer global, exact GELU, no NSP head, no dropout (the
# released recipe has 0.1 on the attention output only; ours is per block, left at 0). The RoPE base is 10,000 in every layer at 1024 tokens; the long-context
# phase raises the global layers' to 160,000 (configs/bert.py, recipe=modern).
MODERN = dict(
  position="rope",
  rope_theta=10000.0,
  rope_theta_local=10000.0,
  mlp="geglu",
  use_bias=False,
  pre_norm=True,
  first_block_norm=False,
  norm_eps=1e-5,
  type_vocab_size=0,
  nsp_head=False,
  attention_window=128,
  global_every=3,
  dropout=0.0,
  scale_residual_init=True,
  max_len=1024,
)

MODERN_SIZES = {  # the paper's base and large (d_ff: the GeGLU's hidden width), and CPU sizes
  "smoke": dict(num_layers=3, num_heads=2, d_model=64, d_ff=96, attention_window=16),
  "tiny": dict(num_layers=3, num_heads=2, d_model=128, d_ff=192, attention_window=32),
  "mini": dict(num_layers=6, num_heads=4, d_model=256, d_ff=384, attention_window=64),
  "base": dict(num_layers=22, num_heads=12, d_model=768, d_ff=1152),  # 149M
  "large": dict(num_layers=28, num_heads=16, d_model=1024, d_ff=2624),  # 395M
}


# The parameter entries of the backbone, shared by every model of this file.
BACKBONE = ("embed", "pos_embed", "type_embed", "embed_norm", "blocks", "final_norm")


def norm(cfg, rngs):
  return layers.Norm(
    cfg.d_model,
    kind=cfg.norm,
    eps=cfg.norm_eps,
    use_bias=cfg.use_bias,
    dtype=layers.dtype_of(cfg.dtype),
    rngs=rngs,
  )


def dense(cfg, n_out, names, rngs, use_bias=True):
  """A head's dense layer from the model width (weights N(0, init_std), zero bias)."""
  init = layers.normal(cfg.init_std)
  return nnx.Linear(
    cfg.d_model,
    n_out,
    use_bias=use_bias,
    dtype=layers.dtype_of(cfg.dtype),
    param_dtype=layers.dtype_of(cfg.param_dtype),
    rngs=rngs,
    kernel_init=layers.partitioned(init, names),
    bias_init=layers.partitioned(layers.zeros, names[1:]),
  )


def at_positions(hidden, positions):
  """hidden [b, t, d] at `positions` [b, p]: [b, p, d]."""
  # A one-hot matmul rather than a gather: it partitions cleanly on any mesh and its
  # transpose is a matmul too (p x t per example, small next to the blocks).
  select = jax.nn.one_hot(positions, hidden.shape[1], dtype=hidden.dtype)
  return jnp.einsum("bpt,btd->bpd", select, hidden)


class Backbone(nnx.Module):
  """tokens [b, t] (+ type ids, padding mask) -> hidden states [b, t, d]."""

  def __init__(self, cfg, *, rngs):
    dtype, param_dtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    init = layers.normal(cfg.init_std)
    embed = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.rate, self.scan_layers, self.remat = cfg.dropout, cfg.scan_layers, cfg.remat
    self.unroll = layer_stack.scan_unroll(cfg)
    self.per_layer = layers.per_layer(cfg)  # the blocks' per-layer switches
    self.embed = nnx.Embed(
      cfg.vocab_size,
      cfg.d_model,
      **embed,
      embedding_init=layers.partitioned(init, (axes.VOCAB, axes.EMBED)),
    )
    self.pos_embed = (
      None
      if cfg.position == "rope"
      else nnx.Embed(
        cfg.max_len,
        cfg.d_model,
        **embed,
        embedding_init=layers.partitioned(init, (axes.POSITIONS, axes.EMBED)),
      )
    )
    self.type_embed = (
      nnx.Embed(
        cfg.type_vocab_size,
        cfg.d_model,
        **embed,
        embedding_init=layers.partitioned(init, (axes.TYPES, axes.EMBED)),
      )
      if cfg.type_vocab_size
      else None
    )
    self.embed_norm = norm(cfg, rngs)
    self.dropout = nnx.Dropout(cfg.dropout)
    self.blocks = layer_stack.make_blocks(cfg, causal=False, rngs=rngs)
    self.final_norm = norm(cfg, rngs) if cfg.pre_norm else None

  def __call__(
    self, tokens, *, type_ids=None, input_mask=None, positions=None, segment_ids=None,
    dropout_key=None,
  ):  # fmt: skip
    """Packed rows (several documents or examples a row) give `segment_ids` [b, t]: attention
    stays within a segment, and `positions` [b, t] restart in each."""
    x = self._embed(tokens, type_ids, positions)
    block_key = None
    if dropout_key is not None and self.rate:
      dropout_key, block_key = jax.random.split(dropout_key)
      x = self.dropout(x, deterministic=False, rngs=dropout_key)
    mask = None if input_mask is None else input_mask.astype(bool)[:, None, None, :]
    if segment_ids is not None:
      within = layers.segment_mask(segment_ids)
      mask = within if mask is None else mask & within
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
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
    return x if self.final_norm is None else self.final_norm(x)

  def _embed(self, tokens, type_ids, positions):
    """Token (+ position) (+ token-type) embeddings, normalised."""
    x = self.embed(tokens)
    if self.pos_embed is not None:
      t = tokens.shape[1]
      at = (
        layers.embed_prefix(self.pos_embed, t) if positions is None else self.pos_embed(positions)
      )
      x = x + at
    if self.type_embed is not None:
      types = jnp.zeros_like(tokens) if type_ids is None else type_ids
      x = x + layers.embed_rows(self.type_embed, types)
    return axes.constrain(self.embed_norm(x), axes.ACTIVATION)

  def head_dropout(self, x, dropout_key):
    """Dropout before a task head (BERT's hidden_dropout_prob), in training only."""
    if dropout_key is None or not self.rate:
      return x
    return self.dropout(x, deterministic=False, rngs=jax.random.fold_in(dropout_key, 1))


class Encoder(Backbone):
  """The pretraining model: the backbone with the pooler, masked-LM and next-sentence heads."""

  def __init__(self, cfg, *, rngs):
    super().__init__(cfg, rngs=rngs)
    self.pooler = dense(cfg, cfg.d_model, (axes.EMBED, axes.MLP), rngs)
    self.mlm_dense = dense(cfg, cfg.d_model, (axes.EMBED, axes.MLP), rngs, cfg.use_bias)
    self.mlm_norm = norm(cfg, rngs)
    self.mlm_bias = nnx.Param(
      jnp.zeros((cfg.vocab_size,), layers.dtype_of(cfg.param_dtype)), out_sharding=(axes.VOCAB,)
    )
    self.nsp = dense(cfg, 2, (axes.EMBED, axes.CLASSES), rngs) if cfg.nsp_head else None
    self.logit_softcap = cfg.logit_softcap
    self.z_loss = cfg.z_loss

  def pooled(self, hidden):
    return jnp.tanh(self.pooler(hidden[:, 0]))

  def mlm_logits(self, hidden, positions):
    """Vocabulary logits at `positions` [b, p] only: [b, p, vocab]."""
    picked = at_positions(hidden, positions)
    h = self.mlm_norm(jax.nn.gelu(self.mlm_dense(picked), approximate=False))
    logits = self.embed.attend(h) + self.mlm_bias[...].astype(h.dtype)
    return layers.replicate_last_axis(layers.soft_cap(logits, self.logit_softcap))

  def nsp_logits(self, pooled):
    return self.nsp(pooled)


def segment_means(hidden, input_mask, segment_ids=None, segments=None):
  """The mean of hidden [b, t, d] over each row's tokens (input_mask [b, t]): [b, d]; or, for
  rows of `segments` examples (segment_ids [b, t], 1 to segments), over each one's: [b, s, d]."""
  mask = input_mask.astype(hidden.dtype)
  if segments is None:
    member = mask[..., None]  # [b, t, 1]
  else:
    member = (segment_ids[..., None] == jnp.arange(1, segments + 1)) * mask[..., None]
  total = jnp.einsum("bts,btd->bsd", member.astype(hidden.dtype), hidden)
  out = total / jnp.maximum(jnp.sum(member, axis=1), 1.0)[..., None]
  return out[:, 0] if segments is None else out


class SequenceClassifier(Backbone):
  """[CLS] (or the mean of the states: cfg.classifier_pooling) -> pooler -> dropout ->
  `num_labels` logits (one output: a regression score); or, for rows of several examples,
  each example's at `cls_positions` (mean: over its `segment_ids`) [b, s]: [b, s, labels]."""

  def __init__(self, cfg, *, rngs):
    super().__init__(cfg, rngs=rngs)
    self.mean_pooling = cfg.classifier_pooling == "mean"
    self.pooler = dense(cfg, cfg.d_model, (axes.EMBED, axes.MLP), rngs)
    self.classifier = dense(cfg, cfg.num_labels, (axes.EMBED, axes.CLASSES), rngs)

  def logits(self, hidden, dropout_key=None, cls_positions=None, input_mask=None, segment_ids=None):
    if self.mean_pooling:
      segments = None if cls_positions is None else cls_positions.shape[1]
      first = segment_means(hidden, input_mask, segment_ids, segments)
    else:
      first = hidden[:, 0] if cls_positions is None else at_positions(hidden, cls_positions)
    pooled = jnp.tanh(self.pooler(first))
    return self.classifier(self.head_dropout(pooled, dropout_key)).astype(jnp.float32)


class TokenClassifier(Backbone):
  """Every position -> dropout -> `num_labels` logits [b, t, num_labels]."""

  def __init__(self, cfg, *, rngs):
    super().__init__(cfg, rngs=rngs)
    self.classifier = dense(cfg, cfg.num_labels, (axes.EMBED, axes.CLASSES), rngs)

  def logits(self, hidden, dropout_key=None):
    return self.classifier(self.head_dropout(hidden, dropout_key)).astype(jnp.float32)


class SpanClassifier(Backbone):
  """Every position -> (start, end) logits, each [b, t] (BERT's qa_outputs)."""

  def __init__(self, cfg, *, rngs):
    super().__init__(cfg, rngs=rngs)
    self.span = dense(cfg, 2, (axes.EMBED, axes.CLASSES), rngs)

  def logits(self, hidden, dropout_key=None):
    out = self.span(self.head_dropout(hidden, dropout_key)).astype(jnp.float32)
    return out[..., 0], out[..., 1]


def count_params(cfg, *, exclude_positions=True):
  return layers.count_params(lambda: Encoder(cfg, rngs=nnx.Rngs(0)), exclude_positions)
