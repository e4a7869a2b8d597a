"""A model's architecture: every field, its type and its default, in one frozen dataclass.

A config's `model` section (an ml_collections ConfigDict, which the command line overrides)
starts from `defaults(...)` of its family (models/decoder.py, models/encoder.py); `resolve`
turns it into a `ModelConfig`, with the derived (0) fields filled in. A checkpoint records its
`ModelConfig.to_dict()`; one written before a field existed reads as that field's default,
the architecture it had.
"""

import dataclasses

import ml_collections

from pretrain.ground import errors

# The choices of each switch. They are checked here only: up front by
# pretrain/training/config_checks.py, and by each module that uses a switch when it is built.
OPTIONS = {
  "position": ("learned", "rope"),
  "norm": ("layernorm", "rmsnorm"),
  "mlp": ("gelu", "swiglu", "geglu", "relu2"),
  "attention": ("", "xla", "cudnn"),
  "remat": ("none", "full", "dots", "offload"),
  "classifier_pooling": ("cls", "mean"),  # an encoder's own
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A Transformer's architecture. The defaults are GPT-2's; 0 means "derive" (`resolve`)."""

  num_layers: int
  num_heads: int
  d_model: int
  max_len: int = 1024  # positions: the learned table's rows, the longest sequence
  size: str = ""  # the name of the family's SIZES entry this came from, for the record
  vocab_size: int = 0  # 0: the tokenizer's size rounded up to vocab_multiple
  vocab_multiple: int = 128
  num_kv_heads: int = 0  # 0: num_heads (multi-head); fewer: grouped-query attention
  head_dim: int = 0  # 0: d_model // num_heads
  d_ff: int = 0  # 0: 4 * d_model (gelu) or 8/3 * d_model rounded to 64 (gated, relu2)
  position: str = "learned"  # 'learned' or 'rope'
  rope_theta: float = 10000.0
  norm: str = "layernorm"  # 'layernorm' or 'rmsnorm'
  norm_eps: float = 1e-5
  # 'gelu', 'swiglu' (gated SiLU), 'geglu' (gated GELU: ModernBERT) or 'relu2' (relu(x)^2)
  mlp: str = "gelu"
  gelu_approximate: bool = True  # GPT-2's tanh approximation; False: the exact erf GELU
  qk_norm: bool = False  # RMSNorm on each head's queries and keys, before RoPE
  logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap) (Gemma 2 uses 30)
  zero_init_proj: bool = False  # attention's output and the MLP's last layer start at zero
  z_loss: float = 0.0  # training loss + z_loss * mean(logsumexp(logits)^2) (PaLM: 1e-4)
  use_bias: bool = True
  tie_embeddings: bool = True  # the output head is the token embedding's transpose
  pre_norm: bool = True  # pre-LN blocks (GPT-2); False: post-LN (original BERT)
  # False: the first block has no pre-attention norm, the embedding's norm stands in (ModernBERT)
  first_block_norm: bool = True
  dropout: float = 0.0
  init_std: float = 0.02
  scale_residual_init: bool = True  # GPT-2: residual projections get init_std / sqrt(2 * layers)
  dtype: str = "float32"  # compute dtype; 'bfloat16' on accelerators
  param_dtype: str = "float32"
  attention: str = ""  # '': cuDNN's flash kernel where it runs (GPU, 16-bit), else XLA's
  # Local (sliding-window) attention: > 0, the local layers attend within this many positions
  # (a causal layer to the last `window`, itself included; an encoder's to window // 2 on each
  # side: ModernBERT's 128 is +-64); 0: every layer global (dense).
  attention_window: int = 0
  global_every: int = 1  # with a window: layer i is global when i % global_every == 0; 0: none
  rope_theta_local: float = 0.0  # the local layers' RoPE base; 0: rope_theta
  scan_layers: bool = True  # the blocks stacked and run by lax.scan (models/layer_stack.py)
  scan_unroll: int = 0  # layers per scan iteration; 0: all up to 12 layers without remat, else 1
  remat: str = "none"  # 'none', 'full', 'dots' (keep matmul outputs), 'offload' (to host)
  # An encoder's (BERT's) own fields; None in a decoder.
  type_vocab_size: int | None = None  # rows of the token-type (segment) table; 0: none
  nsp_head: bool | None = None  # the next-sentence head (BERT); RoBERTa has none
  num_labels: int | None = None  # a fine-tuning task head's outputs; 1: a regression score
  # What a sequence classifier reads: 'cls' (BERT: the [CLS] state) or 'mean' (the mean of the
  # example's states, [CLS] and [SEP] included: ModernBERT's classifier_pooling='mean')
  classifier_pooling: str | None = None

  @property
  def is_encoder(self) -> bool:
    return self.type_vocab_size is not None

  def to_dict(self) -> dict:
    """The fields, as a checkpoint and config.json record them (a decoder without the
    encoder's)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# Each field's default (None: an encoder's own field, absent from a decoder)
DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in FIELDS}
_REQUIRED = ("num_layers", "num_heads", "d_model")


def defaults(**family) -> dict:
  """A family's model section before a size is chosen: every field with a default (but
  `size`), with the family's own values; a decoder leaves out the encoder's fields."""
  out = {
    f.name: f.default
    for f in dataclasses.fields(ModelConfig)
    if f.name not in _REQUIRED + ("size",) and f.default is not None
  }
  unknown = sorted(set(family) - set(FIELDS))
  if unknown:
    raise ValueError(f"not fields of ModelConfig: {', '.join(unknown)}")
  return dict(out, **family)


def check_option(field: str, value) -> None:
  if value not in OPTIONS[field]:
    raise errors.UserError(
      f"config.model.{field}: {value!r} is not one of {', '.join(map(repr, OPTIONS[field]))}"
    )


def resolve(model, vocab_size: int) -> ModelConfig:
  """The ModelConfig of a model section (a ConfigDict or a checkpoint's dict), with every
  derived (0) field filled in; the tokenizer's `vocab_size` sizes the embedding."""
  fields = model.to_dict() if isinstance(model, ml_collections.ConfigDict) else dict(model)
  unknown = sorted(set(fields) - set(FIELDS))
  if unknown:
    raise errors.UserError(
      f"config.model.{unknown[0]}: not a model field; the fields are ModelConfig's "
      "(models/model_config.py)"
    )
  missing = [f for f in _REQUIRED if not fields.get(f)]
  if missing:
    raise errors.UserError(f"config.model.{missing[0]}: required; set it or choose a size")
  cfg = ModelConfig(**fields)
  d_ff = cfg.d_ff or (
    4 * cfg.d_model if cfg.mlp == "gelu" else -(-(8 * cfg.d_model // 3) // 64) * 64
  )
  return dataclasses.replace(
    cfg,
    vocab_size=cfg.vocab_size or -(-vocab_size // cfg.vocab_multiple) * cfg.vocab_multiple,
    num_kv_heads=cfg.num_kv_heads or cfg.num_heads,
    head_dim=cfg.head_dim or cfg.d_model // cfg.num_heads,
    d_ff=d_ff,
  )
