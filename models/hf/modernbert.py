"""Hugging Face ModernBERT <-> our Encoder with ModernBERT's architecture (encoder.MODERN).

Pure mappings in the style of models/hf/encoder.py: an HF config.json dict -> our model section,
our resolved model -> a config.json dict, and HF tensors (by HF name, with the 'model.' prefix
of ModernBertForMaskedLM) <-> our unscanned parameter tree.

ModernBERT is a pre-LN encoder without biases: RoPE (one base for the global layers, one for
the local ones), a fused QKV projection, GeGLU (the first half of Wi is activated, the second
is the gate: our `gate` and `fc`), LayerNorm without bias, a final norm, and a masked-LM head
(dense, GELU, norm, the tied token embedding plus a bias). Its first layer has no attention
norm (the embedding's norm stands in: first_block_norm=False); our layer 0's norm1 is unused,
imported as ones and not exported. Local layers attend +-sliding_window positions
(attention_window = 2 * sliding_window), every global_attn_every_n_layers-th layer globally.
"""

import jax.numpy as jnp

from models import encoder
from models.hf import decoder as hf_decoder
from models.hf import encoder as hf_encoder

ConvertError = hf_decoder.ConvertError

SUPPORTED = ("modernbert",)
GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
GROUPS = ("encoder", "mlm")
PREFIX = "model."


# What every ModernBERT has, as our encoder's MODERN architecture gives it.
_FIXED = {
  field: encoder.MODERN[field]
  for field in ("position", "mlp", "use_bias", "pre_norm", "first_block_norm", "type_vocab_size")
} | dict(norm="layernorm", tie_embeddings=True)


def _rope_thetas(hf):
  """(global, local) RoPE bases of a config.json (transformers 5's rope_parameters, or the
  released checkpoints' global_rope_theta / local_rope_theta)."""
  rope = hf.get("rope_parameters") or {}
  full = (rope.get("full_attention") or {}).get("rope_theta")
  local = (rope.get("sliding_attention") or {}).get("rope_theta")
  return (
    float(full or hf.get("global_rope_theta", 160000.0)),
    float(local or hf.get("local_rope_theta", 10000.0)),
  )


def _global_every(hf, where):
  every = int(hf.get("global_attn_every_n_layers", 3))
  types = hf.get("layer_types")
  if types:
    want = ["sliding_attention" if i % every else "full_attention" for i in range(len(types))]
    if list(types) != want:
      hf_decoder.refuse(where, "layer_types", types, f"only every {every}-th layer global converts")
  return every


def model_fields(hf, where="config.json"):
  """Our encoder's model fields (beyond encoder.DEFAULTS) for an HF ModernBERT config."""
  for field in ("hidden_activation", "classifier_activation"):
    if hf.get(field, "gelu") not in GELU:
      hf_decoder.refuse(where, field, hf.get(field), f"use one of {', '.join(GELU)}")
  for field, ok in (
    ("attention_bias", False),
    ("mlp_bias", False),
    ("norm_bias", False),
    ("classifier_bias", False),
    ("decoder_bias", True),
    ("tie_word_embeddings", True),
  ):
    if hf.get(field, ok) != ok:
      hf_decoder.refuse(where, field, hf[field], f"ModernBERT converts with {field}={ok}")
  global_theta, local_theta = _rope_thetas(hf)
  return dict(
    vocab_size=hf.get("vocab_size", 50368),
    num_layers=hf.get("num_hidden_layers", 22),
    **hf_encoder.attention_fields(hf, where),
    d_ff=hf.get("intermediate_size", 1152),
    max_len=hf.get("max_position_embeddings", 8192),
    rope_theta=global_theta,
    rope_theta_local=local_theta,
    attention_window=2 * int(hf.get("local_attention", 128) // 2),
    global_every=_global_every(hf, where),
    norm_eps=hf.get("norm_eps", 1e-5),
    gelu_approximate=GELU[hf.get("hidden_activation", "gelu")],
    nsp_head=False,
    init_std=hf.get("initializer_range", 0.02),
    **_FIXED,
  )


def is_modern(m):
  """Whether a resolved encoder has ModernBERT's architecture (and so exports as one)."""
  return m.mlp == "geglu" and m.position == "rope" and m.type_vocab_size == 0


def check_exportable(m, objective):
  """An error naming the first field ModernBERT's HF classes cannot express."""
  if objective != "mlm":
    raise ConvertError(
      f"config.objective: {objective!r}; ModernBERT exports from masked-LM runs (objective mlm)"
    )
  hf_encoder.check_fields(m, _FIXED, "ModernBERT")
  if m.attention_window % 2 or not m.attention_window or m.global_every < 1:
    raise ConvertError(
      "config.model.attention_window: ModernBERT needs an even window and global_every >= 1"
    )


def hf_config(m, specials):
  """The config.json dict of ModernBertForMaskedLM for resolved model `m`; `specials`:
  {'pad'|'cls'|'sep'|'mask': id}."""
  return dict(
    architectures=["ModernBertForMaskedLM"],
    model_type="modernbert",
    vocab_size=m.vocab_size,
    hidden_size=m.d_model,
    num_hidden_layers=m.num_layers,
    num_attention_heads=m.num_heads,
    intermediate_size=m.d_ff,
    hidden_activation="gelu_pytorch_tanh" if m.gelu_approximate else "gelu",
    classifier_activation="gelu",
    max_position_embeddings=m.max_len,
    norm_eps=m.norm_eps,
    norm_bias=False,
    attention_bias=False,
    mlp_bias=False,
    classifier_bias=False,
    decoder_bias=True,
    local_attention=m.attention_window,
    global_attn_every_n_layers=m.global_every,
    global_rope_theta=m.rope_theta,
    local_rope_theta=m.rope_theta_local or m.rope_theta,
    initializer_range=m.init_std,
    tie_word_embeddings=True,
    pad_token_id=specials.get("pad"),
    cls_token_id=specials.get("cls"),
    sep_token_id=specials.get("sep"),
    bos_token_id=specials.get("cls"),
    eos_token_id=specials.get("sep"),
    torch_dtype="float32",
    dtype="float32",
  )


# ----------------------------------------------------------------------------- tensors


def _block_to_hf(out, p, b, m, first):
  d, q = m.d_model, m.num_heads * m.head_dim
  a = b["attn"]
  out[p + "attn.Wqkv.weight"] = jnp.concatenate(
    [a[n]["kernel"].reshape(d, q).T for n in ("query", "key", "value")]
  )
  out[p + "attn.Wo.weight"] = a["out"]["kernel"].reshape(q, d).T
  if not first:
    out[p + "attn_norm.weight"] = b["norm1"]["norm"]["scale"]
  out[p + "mlp_norm.weight"] = b["norm2"]["norm"]["scale"]
  mlp = b["mlp"]
  out[p + "mlp.Wi.weight"] = jnp.concatenate([mlp["gate"]["kernel"].T, mlp["fc"]["kernel"].T])
  out[p + "mlp.Wo.weight"] = mlp["proj"]["kernel"].T


def to_hf(m, params, groups=GROUPS):
  """Our unscanned parameter tree -> {HF name: array} (jnp ops only: jax.eval_shape works)."""
  out = {
    PREFIX + "embeddings.tok_embeddings.weight": params["embed"]["embedding"],
    PREFIX + "embeddings.norm.weight": params["embed_norm"]["norm"]["scale"],
    PREFIX + "final_norm.weight": params["final_norm"]["norm"]["scale"],
  }
  for i in range(m.num_layers):
    _block_to_hf(out, f"{PREFIX}layers.{i}.", params["blocks"][i], m, i == 0)
  if "mlm" in groups:
    out["head.dense.weight"] = params["mlm_dense"]["kernel"].T
    out["head.norm.weight"] = params["mlm_norm"]["norm"]["scale"]
    out["decoder.bias"] = params["mlm_bias"]
  return out


def _scale(t, name):
  return {"norm": {"scale": t[name]}}


def _block_from_hf(t, p, m, first):
  d, h, hd, f = m.d_model, m.num_heads, m.head_dim, m.d_ff
  q, k, v = jnp.split(t[p + "attn.Wqkv.weight"], 3)
  attn = {
    n: {"kernel": w.T.reshape(d, h, hd)} for n, w in zip(("query", "key", "value"), (q, k, v))
  }
  attn["out"] = {"kernel": t[p + "attn.Wo.weight"].T.reshape(h, hd, d)}
  wi = t[p + "mlp.Wi.weight"]
  mlp = {
    "gate": {"kernel": wi[:f].T},
    "fc": {"kernel": wi[f:].T},
    "proj": {"kernel": t[p + "mlp.Wo.weight"].T},
  }
  norm1 = (
    {"norm": {"scale": jnp.ones((d,), wi.dtype)}} if first else _scale(t, p + "attn_norm.weight")
  )
  return {"attn": attn, "mlp": mlp, "norm1": norm1, "norm2": _scale(t, p + "mlp_norm.weight")}


def from_hf(m, t, fresh):
  """{HF name: array} -> our unscanned parameter tree; what `t` lacks (the masked-LM head of a
  bare ModernBertModel, the pooler) comes from `fresh`."""
  params = dict(fresh)
  params["embed"] = {"embedding": t[PREFIX + "embeddings.tok_embeddings.weight"]}
  params["embed_norm"] = _scale(t, PREFIX + "embeddings.norm.weight")
  params["final_norm"] = _scale(t, PREFIX + "final_norm.weight")
  params["blocks"] = {
    i: _block_from_hf(t, f"{PREFIX}layers.{i}.", m, i == 0) for i in range(m.num_layers)
  }
  if "head.dense.weight" in t:
    params["mlm_dense"] = {"kernel": t["head.dense.weight"].T}
    params["mlm_norm"] = _scale(t, "head.norm.weight")
    params["mlm_bias"] = t["decoder.bias"]
  return params


def normalise_names(names):
  """HF name as stored -> the name `to_hf` uses (ModernBertModel files have no 'model.')."""
  bare = ("embeddings.", "layers.", "final_norm.")
  return {n: PREFIX + n if n.startswith(bare) else n for n in names}


def groups_present(names):
  return {"mlm" if n.startswith(("head.", "decoder.")) else "encoder" for n in names}
