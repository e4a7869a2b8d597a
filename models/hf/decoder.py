"""Hugging Face GPT-2 and Llama decoders <-> our Decoder: configs and parameter trees.

Pure mappings, no files: an HF config.json dict -> our model section, our resolved model ->
an HF config.json dict, and HF tensors (by HF name) <-> our unscanned parameter tree (the
layout of nnx.to_pure_dict(nnx.state(Decoder, nnx.Param)) with scan_layers=False). Every
tensor is copied with reshapes and transposes only, so a round trip is bitwise exact.

GPT-2: fused Conv1D c_attn ([in, 3 * out]), learned positions, LayerNorm, tanh GELU, biases,
tied head. Llama: torch Linear weights ([out, in]), rotate-half RoPE (as models/layers.rope),
RMSNorm, SwiGLU, grouped-query attention, no biases, untied head unless tie_word_embeddings.
"""

import re

import jax
import jax.numpy as jnp

from pretrain.ground import errors

SUPPORTED = ("gpt2", "llama")
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
# GPT-2 activations that are our tanh-approximated GELU, and the exact one.
GPT2_GELU = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}
# Buffers some checkpoints carry that are not parameters.
IGNORED = re.compile(r"(\.attn\.(masked_)?bias|\.rotary_emb\.inv_freq)$")


class ConvertError(errors.UserError):
  """A model or file that the conversion cannot represent."""


def refuse(where, field, value, fix):
  """Raises the one-line error of an HF config field that does not convert, with the fix."""
  raise ConvertError(f"{where}: {field}={value!r} is not supported; {fix}")


# ----------------------------------------------------------------------------- configs


def model_fields(hf, where="config.json"):
  """Our model section's fields (beyond the decoder's DEFAULTS) for an HF config dict."""
  kind = hf.get("model_type")
  if kind not in SUPPORTED:
    refuse(where, "model_type", kind, f"supported model types: {', '.join(SUPPORTED)}")
  return _gpt2_fields(hf, where) if kind == "gpt2" else _llama_fields(hf, where)


def _gpt2_fields(hf, where):
  act = hf.get("activation_function", "gelu_new")
  if act not in GPT2_GELU:
    refuse(where, "activation_function", act, f"use one of {', '.join(GPT2_GELU)}")
  for field, ok in (
    ("scale_attn_weights", True),
    ("scale_attn_by_inverse_layer_idx", False),
    ("add_cross_attention", False),
    ("tie_word_embeddings", True),
  ):
    if hf.get(field, ok) != ok:
      refuse(where, field, hf[field], f"GPT-2 converts with {field}={ok}")
  d = hf.get("n_embd", 768)
  return dict(
    vocab_size=hf.get("vocab_size", 50257),
    num_layers=hf.get("n_layer", 12),
    num_heads=hf.get("n_head", 12),
    d_model=d,
    d_ff=hf.get("n_inner") or 4 * d,
    max_len=hf.get("n_positions", hf.get("n_ctx", 1024)),
    position="learned",
    norm="layernorm",
    norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    mlp="gelu",
    gelu_approximate=GPT2_GELU[act],
    use_bias=True,
    tie_embeddings=True,
    init_std=hf.get("initializer_range", 0.02),
  )


def _llama_rope_theta(hf, where):
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  for field, params in (("rope_parameters", rope), ("rope_scaling", scaling)):
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default":
      refuse(where, f"{field}.rope_type", kind, "only unscaled RoPE ('default') converts")
  if hf.get("partial_rotary_factor", 1.0) != 1.0:
    refuse(
      where, "partial_rotary_factor", hf["partial_rotary_factor"], "RoPE must cover whole heads"
    )
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _llama_fields(hf, where):
  for field, ok in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
    if hf.get(field, ok) != ok:
      refuse(where, field, hf[field], f"Llama converts with {field}={ok!r}")
  heads = hf.get("num_attention_heads", 32)
  d = hf.get("hidden_size", 4096)
  return dict(
    vocab_size=hf.get("vocab_size", 32000),
    num_layers=hf.get("num_hidden_layers", 32),
    num_heads=heads,
    num_kv_heads=hf.get("num_key_value_heads") or heads,
    d_model=d,
    head_dim=hf.get("head_dim") or d // heads,
    d_ff=hf.get("intermediate_size", 11008),
    max_len=hf.get("max_position_embeddings", 2048),
    position="rope",
    rope_theta=_llama_rope_theta(hf, where),
    norm="rmsnorm",
    norm_eps=hf.get("rms_norm_eps", 1e-6),
    mlp="swiglu",
    use_bias=False,
    tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    init_std=hf.get("initializer_range", 0.02),
  )


# The fields each HF class fixes, checked in this order (the first mismatch is reported).
_FIXED = {
  "gpt2": dict(norm="layernorm", mlp="gelu", use_bias=True, tie_embeddings=True, pre_norm=True),
  "llama": dict(norm="rmsnorm", mlp="swiglu", use_bias=False, pre_norm=True),
}


# Switches no Hugging Face class we convert to expresses, at the value that means "off"
# (zero_init_proj and z_loss change only training, so they export).
NOT_IN_HF = dict(qk_norm=False, logit_softcap=0.0)


def refuse_switches(m, error, why):
  """Raises `error` naming the first switch of NOT_IN_HF that is on in model `m`."""
  for field, off in NOT_IN_HF.items():
    if getattr(m, field) != off:
      raise error(
        f"config.model.{field}: {getattr(m, field)!r} has no Hugging Face equivalent "
        f"({why}); export a model with {field}={off!r}"
      )


def hf_type(m):
  """'gpt2' (learned positions) or 'llama' (RoPE) for a resolved model; an error naming the
  first field that the class cannot express."""
  kind = "gpt2" if m.position == "learned" else "llama"
  for field, want in _FIXED[kind].items():
    if getattr(m, field) != want:
      raise ConvertError(
        f"config.model.{field}: {getattr(m, field)!r} with position={m.position!r} has no Hugging "
        f"Face equivalent ({ARCHITECTURES[kind]} needs {field}={want!r})"
      )
  refuse_switches(m, ConvertError, f"{ARCHITECTURES[kind]} has none")
  if kind == "gpt2" and (m.num_kv_heads != m.num_heads or m.num_heads * m.head_dim != m.d_model):
    raise ConvertError(
      "config.model.num_kv_heads: GPT-2 needs num_kv_heads == num_heads and "
      "head_dim == d_model // num_heads"
    )
  return kind


def hf_config(m, bos_id=None, eos_id=None):
  """The config.json dict of the HF class for resolved model `m`."""
  kind = hf_type(m)
  common = dict(
    architectures=[ARCHITECTURES[kind]],
    model_type=kind,
    vocab_size=m.vocab_size,
    initializer_range=m.init_std,
    bos_token_id=bos_id,
    eos_token_id=eos_id,
    tie_word_embeddings=m.tie_embeddings,
    torch_dtype="float32",
    dtype="float32",
  )
  if kind == "gpt2":
    return dict(
      common,
      n_layer=m.num_layers,
      n_head=m.num_heads,
      n_embd=m.d_model,
      n_inner=m.d_ff,
      n_positions=m.max_len,
      n_ctx=m.max_len,
      layer_norm_epsilon=m.norm_eps,
      activation_function="gelu_new" if m.gelu_approximate else "gelu",
      resid_pdrop=0.0,
      embd_pdrop=0.0,
      attn_pdrop=0.0,
      scale_attn_weights=True,
    )
  return dict(
    common,
    num_hidden_layers=m.num_layers,
    num_attention_heads=m.num_heads,
    num_key_value_heads=m.num_kv_heads,
    hidden_size=m.d_model,
    head_dim=m.head_dim,
    intermediate_size=m.d_ff,
    max_position_embeddings=m.max_len,
    rms_norm_eps=m.norm_eps,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
    rope_theta=m.rope_theta,
    rope_parameters=dict(rope_type="default", rope_theta=m.rope_theta),
  )


# ----------------------------------------------------------------------------- tensors


def to_hf(kind, m, params):
  """Our unscanned parameter tree -> {HF name: array} (jnp ops only: jax.eval_shape works)."""
  d = m.d_model
  out = {}
  if kind == "gpt2":
    out["transformer.wte.weight"] = params["embed"]["embedding"]
    out["transformer.wpe.weight"] = params["pos_embed"]["embedding"]
    _norm_to_hf(out, "transformer.ln_f", params["final_norm"])
    for i in range(m.num_layers):
      p, b = f"transformer.h.{i}.", params["blocks"][i]
      a = b["attn"]
      _norm_to_hf(out, p + "ln_1", b["norm1"])
      _norm_to_hf(out, p + "ln_2", b["norm2"])
      qkv = [a[n] for n in ("query", "key", "value")]
      out[p + "attn.c_attn.weight"] = jnp.stack([x["kernel"] for x in qkv], 1).reshape(d, -1)
      out[p + "attn.c_attn.bias"] = jnp.stack([x["bias"] for x in qkv]).reshape(-1)
      out[p + "attn.c_proj.weight"] = a["out"]["kernel"].reshape(-1, d)
      out[p + "attn.c_proj.bias"] = a["out"]["bias"]
      for hf, ours in (("c_fc", "fc"), ("c_proj", "proj")):
        out[p + f"mlp.{hf}.weight"] = b["mlp"][ours]["kernel"]
        out[p + f"mlp.{hf}.bias"] = b["mlp"][ours]["bias"]
    return out
  out["model.embed_tokens.weight"] = params["embed"]["embedding"]
  out["model.norm.weight"] = params["final_norm"]["norm"]["scale"]
  if not m.tie_embeddings:
    out["lm_head.weight"] = params["head"]["kernel"].T
  for i in range(m.num_layers):
    p, b = f"model.layers.{i}.", params["blocks"][i]
    out[p + "input_layernorm.weight"] = b["norm1"]["norm"]["scale"]
    out[p + "post_attention_layernorm.weight"] = b["norm2"]["norm"]["scale"]
    for hf, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      out[p + f"self_attn.{hf}.weight"] = b["attn"][ours]["kernel"].reshape(d, -1).T
    out[p + "self_attn.o_proj.weight"] = b["attn"]["out"]["kernel"].reshape(-1, d).T
    for hf, ours in (("up_proj", "fc"), ("gate_proj", "gate"), ("down_proj", "proj")):
      out[p + f"mlp.{hf}.weight"] = b["mlp"][ours]["kernel"].T
  return out


def _norm_to_hf(out, name, norm):
  out[name + ".weight"] = norm["norm"]["scale"]
  out[name + ".bias"] = norm["norm"]["bias"]


def _norm(t, name):
  return {"norm": {"scale": t[name + ".weight"], "bias": t[name + ".bias"]}}


def from_hf(kind, m, t):
  """{HF name: array} (checked by `check_tensors`) -> our unscanned parameter tree."""
  d, hd = m.d_model, m.head_dim
  h, kv = m.num_heads, m.num_kv_heads
  blocks = {}
  if kind == "gpt2":
    for i in range(m.num_layers):
      p = f"transformer.h.{i}."
      w = t[p + "attn.c_attn.weight"].reshape(d, 3, h, hd)
      bias = t[p + "attn.c_attn.bias"].reshape(3, h, hd)
      attn = {
        n: {"kernel": w[:, j], "bias": bias[j]} for j, n in enumerate(("query", "key", "value"))
      }
      attn["out"] = {
        "kernel": t[p + "attn.c_proj.weight"].reshape(h, hd, d),
        "bias": t[p + "attn.c_proj.bias"],
      }
      mlp = {
        ours: {"kernel": t[p + f"mlp.{hf}.weight"], "bias": t[p + f"mlp.{hf}.bias"]}
        for hf, ours in (("c_fc", "fc"), ("c_proj", "proj"))
      }
      blocks[i] = {
        "attn": attn,
        "mlp": mlp,
        "norm1": _norm(t, p + "ln_1"),
        "norm2": _norm(t, p + "ln_2"),
      }
    return {
      "embed": {"embedding": t["transformer.wte.weight"]},
      "pos_embed": {"embedding": t["transformer.wpe.weight"]},
      "final_norm": _norm(t, "transformer.ln_f"),
      "blocks": blocks,
    }
  for i in range(m.num_layers):
    p = f"model.layers.{i}."
    attn = {
      ours: {"kernel": t[p + f"self_attn.{hf}.weight"].T.reshape(d, n, hd)}
      for hf, ours, n in (("q_proj", "query", h), ("k_proj", "key", kv), ("v_proj", "value", kv))
    }
    attn["out"] = {"kernel": t[p + "self_attn.o_proj.weight"].T.reshape(h, hd, d)}
    mlp = {
      ours: {"kernel": t[p + f"mlp.{hf}.weight"].T}
      for hf, ours in (("up_proj", "fc"), ("gate_proj", "gate"), ("down_proj", "proj"))
    }
    blocks[i] = {
      "attn": attn,
      "mlp": mlp,
      "norm1": {"norm": {"scale": t[p + "input_layernorm.weight"]}},
      "norm2": {"norm": {"scale": t[p + "post_attention_layernorm.weight"]}},
    }
  params = {
    "embed": {"embedding": t["model.embed_tokens.weight"]},
    "final_norm": {"norm": {"scale": t["model.norm.weight"]}},
    "blocks": blocks,
  }
  if not m.tie_embeddings:
    params["head"] = {"kernel": t["lm_head.weight"].T}
  return params


def normalise_names(kind, names):
  """HF name as stored -> the name `to_hf` uses (GPT2Model files lack 'transformer.')."""
  if kind == "gpt2":
    return {
      n: n if n.startswith(("transformer.", "lm_head.")) else "transformer." + n for n in names
    }
  return {n: n for n in names}


def check_tensors(kind, m, shapes, abstract_params, where):
  """Errors naming the first missing, unexpected or misshapen tensor. `shapes`: HF name ->
  shape; `abstract_params`: our unscanned tree of ShapeDtypeStructs."""
  expected = {
    k: tuple(v.shape)
    for k, v in jax.eval_shape(lambda p: to_hf(kind, m, p), abstract_params).items()
  }
  tied_head = "lm_head.weight" if m.tie_embeddings else None
  check_shapes(
    expected, shapes, where, "decoder", lambda name: name == tied_head or IGNORED.search(name)
  )


def check_shapes(expected, shapes, where, family, allowed):
  """Every expected tensor present with its shape, and no other but those `allowed(name)`
  accepts; `family` ('decoder', 'encoder') for the message."""
  for name in sorted(expected):
    if name not in shapes:
      raise ConvertError(f"{where}: no tensor {name!r}; the file does not match config.json")
    if tuple(shapes[name]) != expected[name]:
      raise ConvertError(
        f"{where}: {name} has shape {tuple(shapes[name])} but config.json implies {expected[name]}"
      )
  for name in sorted(shapes):
    if name not in expected and not allowed(name):
      raise ConvertError(
        f"{where}: unexpected tensor {name!r}; the file does not match "
        f"config.json or is not a supported {family}"
      )
