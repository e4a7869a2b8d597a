"""Hugging Face BERT and RoBERTa encoders <-> our Encoder: configs and parameter trees.

Pure mappings, no files, in the style of models/hf/decoder.py: an HF config.json dict -> our
model section, our resolved model -> an HF config.json dict, and HF tensors (by HF name, with
the 'bert.' / 'roberta.' prefix) <-> our unscanned parameter tree (the layout of
nnx.to_pure_dict(nnx.state(Encoder, nnx.Param)) with scan_layers=False).

Both are post-LN encoders with learned absolute positions, token types, LayerNorm, GELU, biases
and a masked-LM head tied to the token embedding. Parameter groups: the encoder itself, the
pooler, the masked-LM head and (BERT) the next-sentence head; a checkpoint may lack the heads
(BertModel, RobertaModel, ...), which are then initialised fresh. RoBERTa offsets positions by
pad_token_id + 1 (2): the first rows of its position table are dropped on import and written
as zeros on export.
"""

import re

import jax
import jax.numpy as jnp

from models.hf import decoder as hf_decoder

ConvertError = hf_decoder.ConvertError

SUPPORTED = ("bert", "roberta")
# hidden_act -> our gelu_approximate.
GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}
GROUPS = ("encoder", "pooler", "mlm", "nsp", "classifier")
# Buffers some checkpoints carry, and task heads we do not import (RoBERTa's two-layer
# classifier, question answering's qa_outputs).
IGNORED = re.compile(r"(\.position_ids|\.token_type_ids)$")
CLASSIFIER = re.compile(r"^(classifier|qa_outputs)\.")


# ----------------------------------------------------------------------------- configs


def attention_fields(hf, where):
  """The width and heads of an encoder's config.json (BERT's defaults, 768 and 12 heads, no
  grouped keys and values); heads that do not divide the width are refused."""
  d, heads = hf.get("hidden_size", 768), hf.get("num_attention_heads", 12)
  if d % heads:
    hf_decoder.refuse(where, "num_attention_heads", heads, f"it must divide hidden_size={d}")
  return dict(num_heads=heads, num_kv_heads=heads, head_dim=d // heads, d_model=d)


def position_offset(kind, pad_id):
  """Rows of the HF position table before position 0 (RoBERTa: padding_idx + 1)."""
  return pad_id + 1 if kind == "roberta" else 0


def pad_id(hf):
  pad = hf.get("pad_token_id")
  return 1 if pad is None else pad


def model_fields(hf, where="config.json"):
  """Our encoder's model fields (beyond encoder.DEFAULTS) for an HF config dict."""
  kind = hf.get("model_type")
  if kind not in SUPPORTED:
    hf_decoder.refuse(where, "model_type", kind, f"supported encoder types: {', '.join(SUPPORTED)}")
  act = hf.get("hidden_act", "gelu")
  if act not in GELU:
    hf_decoder.refuse(where, "hidden_act", act, f"use one of {', '.join(GELU)}")
  pos = hf.get("position_embedding_type") or "absolute"
  if pos != "absolute":
    hf_decoder.refuse(where, "position_embedding_type", pos, "only absolute positions convert")
  for field, ok in (
    ("is_decoder", False),
    ("add_cross_attention", False),
    ("tie_word_embeddings", True),
  ):
    if hf.get(field, ok) != ok:
      hf_decoder.refuse(where, field, hf[field], f"{kind} converts with {field}={ok}")
  offset = position_offset(kind, pad_id(hf))
  positions = hf.get("max_position_embeddings", 512)
  if positions - offset <= 0:
    hf_decoder.refuse(
      where, "max_position_embeddings", positions, f"{kind} needs more than {offset}"
    )
  return dict(
    vocab_size=hf.get("vocab_size", 30522),
    num_layers=hf.get("num_hidden_layers", 12),
    **attention_fields(hf, where),
    d_ff=hf.get("intermediate_size", 3072),
    max_len=positions - offset,
    type_vocab_size=hf.get("type_vocab_size", 2),
    position="learned",
    norm="layernorm",
    norm_eps=hf.get("layer_norm_eps", 1e-12),
    mlp="gelu",
    gelu_approximate=GELU[act],
    use_bias=True,
    tie_embeddings=True,
    pre_norm=False,
    init_std=hf.get("initializer_range", 0.02),
  )


_FIXED = dict(
  position="learned",
  norm="layernorm",
  mlp="gelu",
  use_bias=True,
  tie_embeddings=True,
  pre_norm=False,
)


def check_fields(m, fixed, family):
  """An error naming the first field of resolved encoder `m` that `family`'s Hugging Face
  classes cannot express: one of `fixed` ({field: the value they need}), a switch they lack,
  or attention other than multi-head."""
  for field, want in fixed.items():
    if getattr(m, field) != want:
      raise ConvertError(
        f"config.model.{field}: {getattr(m, field)!r} has no Hugging Face {family} "
        f"equivalent (it needs {field}={want!r})"
      )
  hf_decoder.refuse_switches(m, ConvertError, f"{family} has none")
  if m.num_kv_heads != m.num_heads or m.num_heads * m.head_dim != m.d_model:
    raise ConvertError(
      f"config.model.num_kv_heads: {family} needs num_kv_heads == num_heads and "
      "head_dim == d_model // num_heads"
    )


def hf_type(m, objective="mlm_nsp"):
  """(model_type, architecture) for a resolved encoder model trained on `objective`: RoBERTa
  for runs imported from RoBERTa (size 'roberta'), else BERT (BertForSequenceClassification
  for the GLUE objective); an error naming the first field HF cannot express."""
  if objective not in ("mlm", "mlm_nsp", "classification"):
    raise ConvertError(
      f"config.objective: {objective!r} does not convert to Hugging Face yet; "
      "encoders convert for mlm, mlm_nsp and classification"
    )
  check_fields(m, _FIXED, "BERT")
  if m.size == "roberta":
    if objective == "classification":
      raise ConvertError(
        "config.objective: RoBERTa's classification head (dense, tanh, "
        "projection) is not ours (pooler, projection); export its encoder"
      )
    return "roberta", "RobertaForMaskedLM"
  if objective == "classification":
    return "bert", "BertForSequenceClassification"
  return "bert", "BertForPreTraining" if m.nsp_head else "BertForMaskedLM"


def hf_config(m, specials, objective="mlm_nsp"):
  """The config.json dict for resolved model `m`; `specials`: {'pad'|'bos'|'eos': id}."""
  kind, arch = hf_type(m, objective)
  pad = specials.get("pad")
  pad = (1 if pad is None else pad) if kind == "roberta" else (pad or 0)
  out = dict(
    architectures=[arch],
    model_type=kind,
    vocab_size=m.vocab_size,
    hidden_size=m.d_model,
    num_hidden_layers=m.num_layers,
    num_attention_heads=m.num_heads,
    intermediate_size=m.d_ff,
    hidden_act="gelu_new" if m.gelu_approximate else "gelu",
    max_position_embeddings=m.max_len + position_offset(kind, pad),
    type_vocab_size=m.type_vocab_size,
    layer_norm_eps=m.norm_eps,
    initializer_range=m.init_std,
    pad_token_id=pad,
    position_embedding_type="absolute",
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    tie_word_embeddings=True,
    is_decoder=False,
    add_cross_attention=False,
    torch_dtype="float32",
    dtype="float32",
  )
  if kind == "roberta":
    out.update(bos_token_id=specials.get("bos"), eos_token_id=specials.get("eos"))
  if arch == "BertForSequenceClassification":
    n = m.num_labels
    out.update(
      num_labels=n,
      id2label={str(i): f"LABEL_{i}" for i in range(n)},
      label2id={f"LABEL_{i}": i for i in range(n)},
      problem_type="regression" if n == 1 else "single_label_classification",
    )
  return out


# ----------------------------------------------------------------------------- tensors


def _names(kind):
  """(base prefix, {group: prefix of its HF names})."""
  if kind == "bert":
    return "bert.", {
      "pooler": "bert.pooler.",
      "mlm": "cls.predictions.",
      "nsp": "cls.seq_relationship.",
      "classifier": "classifier.",
    }
  return "roberta.", {
    "pooler": "roberta.pooler.",
    "mlm": "lm_head.",
    "nsp": None,
    "classifier": None,
  }


def group_of(kind, name):
  _, prefixes = _names(kind)
  for group, prefix in prefixes.items():
    if prefix and name.startswith(prefix):
      return group
  return "encoder"


def to_hf(kind, m, params, groups=GROUPS, pad_id=1):
  """Our unscanned parameter tree -> {HF name: array} for the parameter `groups` asked for
  (jnp ops only: jax.eval_shape works)."""
  base, _ = _names(kind)
  d = m.d_model
  out = {}
  e = base + "embeddings."
  out[e + "word_embeddings.weight"] = params["embed"]["embedding"]
  pos = params["pos_embed"]["embedding"]
  offset = position_offset(kind, pad_id)
  if offset:
    pos = jnp.concatenate([jnp.zeros((offset, d), pos.dtype), pos])
  out[e + "position_embeddings.weight"] = pos
  out[e + "token_type_embeddings.weight"] = params["type_embed"]["embedding"]
  _norm_to_hf(out, e + "LayerNorm", params["embed_norm"])
  for i in range(m.num_layers):
    p, b = f"{base}encoder.layer.{i}.", params["blocks"][i]
    a = b["attn"]
    for n in ("query", "key", "value"):
      out[p + f"attention.self.{n}.weight"] = a[n]["kernel"].reshape(d, -1).T
      out[p + f"attention.self.{n}.bias"] = a[n]["bias"].reshape(-1)
    out[p + "attention.output.dense.weight"] = a["out"]["kernel"].reshape(-1, d).T
    out[p + "attention.output.dense.bias"] = a["out"]["bias"]
    _norm_to_hf(out, p + "attention.output.LayerNorm", b["norm1"])
    _dense_to_hf(out, p + "intermediate.dense", b["mlp"]["fc"])
    _dense_to_hf(out, p + "output.dense", b["mlp"]["proj"])
    _norm_to_hf(out, p + "output.LayerNorm", b["norm2"])
  if "pooler" in groups:
    _dense_to_hf(out, base + "pooler.dense", params["pooler"])
  if "mlm" in groups:
    if kind == "bert":
      _dense_to_hf(out, "cls.predictions.transform.dense", params["mlm_dense"])
      _norm_to_hf(out, "cls.predictions.transform.LayerNorm", params["mlm_norm"])
      out["cls.predictions.bias"] = params["mlm_bias"]
    else:
      _dense_to_hf(out, "lm_head.dense", params["mlm_dense"])
      _norm_to_hf(out, "lm_head.layer_norm", params["mlm_norm"])
      out["lm_head.bias"] = params["mlm_bias"]
  if "nsp" in groups and kind == "bert":
    _dense_to_hf(out, "cls.seq_relationship", params["nsp"])
  if "classifier" in groups and kind == "bert":
    _dense_to_hf(out, "classifier", params["classifier"])
  return out


def _dense_to_hf(out, name, dense):
  out[name + ".weight"] = dense["kernel"].T
  out[name + ".bias"] = dense["bias"]


def _norm_to_hf(out, name, norm):
  out[name + ".weight"] = norm["norm"]["scale"]
  out[name + ".bias"] = norm["norm"]["bias"]


def _dense(t, name):
  return {"kernel": t[name + ".weight"].T, "bias": t[name + ".bias"]}


def _norm(t, name):
  return {"norm": {"scale": t[name + ".weight"], "bias": t[name + ".bias"]}}


def from_hf(kind, m, t, fresh, pad_id=1):
  """{HF name: array} (checked by `check_tensors`) -> our unscanned parameter tree; the
  groups `t` lacks come from `fresh` (a freshly initialised tree)."""
  base, _ = _names(kind)
  d, h, hd = m.d_model, m.num_heads, m.head_dim
  e = base + "embeddings."
  params = dict(fresh)
  params["embed"] = {"embedding": t[e + "word_embeddings.weight"]}
  params["pos_embed"] = {
    "embedding": t[e + "position_embeddings.weight"][position_offset(kind, pad_id) :]
  }
  params["type_embed"] = {"embedding": t[e + "token_type_embeddings.weight"]}
  params["embed_norm"] = _norm(t, e + "LayerNorm")
  blocks = {}
  for i in range(m.num_layers):
    p = f"{base}encoder.layer.{i}."
    attn = {
      n: {
        "kernel": t[p + f"attention.self.{n}.weight"].T.reshape(d, h, hd),
        "bias": t[p + f"attention.self.{n}.bias"].reshape(h, hd),
      }
      for n in ("query", "key", "value")
    }
    attn["out"] = {
      "kernel": t[p + "attention.output.dense.weight"].T.reshape(h, hd, d),
      "bias": t[p + "attention.output.dense.bias"],
    }
    mlp = {"fc": _dense(t, p + "intermediate.dense"), "proj": _dense(t, p + "output.dense")}
    blocks[i] = {
      "attn": attn,
      "mlp": mlp,
      "norm1": _norm(t, p + "attention.output.LayerNorm"),
      "norm2": _norm(t, p + "output.LayerNorm"),
    }
  params["blocks"] = blocks
  present = groups_present(kind, t)
  if "pooler" in present:
    params["pooler"] = _dense(t, base + "pooler.dense")
  if "mlm" in present:
    head = "cls.predictions." if kind == "bert" else "lm_head."
    dense, norm = (
      ("transform.dense", "transform.LayerNorm") if kind == "bert" else ("dense", "layer_norm")
    )
    params["mlm_dense"] = _dense(t, head + dense)
    params["mlm_norm"] = _norm(t, head + norm)
    params["mlm_bias"] = t[head + "bias"]
  if "nsp" in present and "nsp" in fresh:
    params["nsp"] = _dense(t, "cls.seq_relationship")
  if "classifier" in present and "classifier" in fresh:
    params["classifier"] = _dense(t, "classifier")
  return params


def normalise_names(kind, names):
  """HF name as stored -> the name `to_hf` uses (BertModel / RobertaModel files have no
  'bert.' / 'roberta.' prefix)."""
  base, _ = _names(kind)
  bare = ("embeddings.", "encoder.", "pooler.")
  return {n: base + n if n.startswith(bare) else n for n in names}


def groups_present(kind, names):
  """The parameter groups with at least one tensor among `names` (canonical HF names)."""
  return {group_of(kind, n) for n in names if not IGNORED.search(n)} & set(GROUPS)


def split_extras(kind, names):
  """(tied copies of the masked-LM decoder: {name: the tensor it must equal}, task-head
  tensors that are not imported)."""
  head = "cls.predictions." if kind == "bert" else "lm_head."
  base, _ = _names(kind)
  tied = {
    head + "decoder.weight": base + "embeddings.word_embeddings.weight",
    head + "decoder.bias": head + "bias",
  }
  return (
    {k: v for k, v in tied.items() if k in names},
    sorted(n for n in names if CLASSIFIER.search(n) and group_of(kind, n) == "encoder"),
  )


def check_tensors(kind, m, shapes, abstract_params, where, pad_id=1):
  """Errors naming the first missing, unexpected or misshapen tensor; the groups present.
  `shapes`: canonical HF name -> shape; `abstract_params`: our unscanned tree of
  ShapeDtypeStructs (with the NSP head exactly when BERT's file has one)."""
  present = groups_present(kind, shapes)
  if "encoder" not in present:
    raise ConvertError(f"{where}: no encoder tensors; the file is not a {kind} model")
  expected = {
    k: tuple(v.shape)
    for k, v in jax.eval_shape(
      lambda p: to_hf(kind, m, p, groups=present, pad_id=pad_id), abstract_params
    ).items()
  }
  tied, extras = split_extras(kind, shapes)
  hf_decoder.check_shapes(
    expected,
    shapes,
    where,
    "encoder",
    lambda name: name in tied or name in extras or IGNORED.search(name),
  )
  return present, tied, extras
