r"""Hugging Face GPT-2 / Llama decoders and BERT / RoBERTa encoders <-> our runs, as a library:
`import_hf(hf_dir, base_config) -> Imported` (config, model, parameters, tokenizer),
`write_run(imported, workdir)`, and `export_hf(workdir, hf_dir)`. The command line is
`python -m pretrain.convert` (pretrain/convert.py), which gives the base configs.

Importing reads a local HF directory (config.json; model.safetensors, its sharded index, or
pytorch_model.bin when torch is installed; tokenizer.json, or GPT-2's vocab.json + merges.txt)
and writes a workdir that `pretrain.evaluate` and `config.init_from` accept: config.json (the
configs/gpt.py smoke config with the model section replaced and the run's tokenizer.json as
data.tokenizer), tokenizer.json and a checkpoint at step 0 (float32, dropout 0, layers stacked
unless --noscan_layers). to_hf writes config.json, model.safetensors (float32) and the run's
tokenizer from a workdir's checkpoint, scanned or not. Either writes nothing unless every
check passes. Mappings: models/hf/decoder.py and models/hf/encoder.py.

ModernBERT (ModernBertForMaskedLM, or ModernBertModel with a fresh masked-LM head) imports into
configs/bert.py:smoke,recipe=modern with its own architecture, and a run of that architecture
(objective mlm) exports as ModernBertForMaskedLM (models/hf/modernbert.py).

Encoders (model_type bert or roberta) import into a configs/bert.py smoke config (recipe bert,
objective mlm_nsp when the file has BERT's next-sentence head or no heads at all, else mlm;
recipe roberta for RoBERTa); heads the file lacks are initialised fresh, and other task heads
(RoBERTa's classifier, qa_outputs) are not imported; a line says which.
BertForSequenceClassification imports whole (encoder, pooler, classifier) into a
configs/finetune/glue.py config (objective classification, its label count). They export as
BertForPreTraining (with the NSP head), BertForMaskedLM, RobertaForMaskedLM (runs imported
from RoBERTa), without the pooler for the masked-LM classes, or, from a GLUE fine-tuning run,
BertForSequenceClassification. RoBERTa's special tokens (<s> </s> <pad> <unk> <mask>) take
the roles of BERT's in the masked-LM and fine-tuning data, so every workdir trains, evaluates
and fine-tunes like a run of ours.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tokenizers
from flax import nnx
from tokenizers import decoders, pre_tokenizers, processors

from input_pipeline import tokenizer
from models import decoder, encoder, layer_stack, model_config
from models.hf import decoder as hf_decoder
from models.hf import encoder as hf_encoder
from models.hf import modernbert as hf_modernbert
from pretrain.objectives import objective as objective_lib
from pretrain.objectives import registry
from pretrain.state import loading, run_files
from pretrain.training import config_checks

ConvertError = hf_decoder.ConvertError

# ----------------------------------------------------------------------------- reading HF


def _check_output(path, flag, overwrite):
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not overwrite:
    raise ConvertError(
      f"{flag}: {path!r} exists and is not empty; choose another directory or pass --overwrite"
    )


def _check_apart(out, flag, source):
  """The output directory (replaced as a whole) must not hold the input."""
  out, source = os.path.abspath(out), os.path.abspath(source)
  if os.path.commonpath([out, source]) == out:
    raise ConvertError(f"{flag}: {out!r} holds the input {source!r}; choose another directory")


def _replace(tmp, path):
  """Moves the finished directory `tmp` to `path`, replacing what is there."""
  if os.path.isdir(path):
    shutil.rmtree(path)
  elif os.path.exists(path):
    os.remove(path)
  os.replace(tmp, path)


def _temporary_dir(path):
  """A directory beside `path` to write into and rename to `path` once complete."""
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".tmp-" + os.path.basename(path))
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's is 0700
  return tmp


def read_hf_config(hf_dir: str) -> dict:
  if not os.path.isdir(hf_dir):
    raise ConvertError(
      f"--hf_dir: {hf_dir!r} is not a local directory; download the model first "
      "(e.g. `huggingface-cli download <name> --local-dir <dir>`)"
    )
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise ConvertError(f"--hf_dir: {hf_dir!r} has no config.json; give a saved Hugging Face model")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _weight_files(hf_dir):
  """('safetensors' | 'torch', [paths])."""
  single = os.path.join(hf_dir, "model.safetensors")
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  if os.path.isfile(single):
    return "safetensors", [single]
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    return "safetensors", [os.path.join(hf_dir, s) for s in shards]
  bin_path = os.path.join(hf_dir, "pytorch_model.bin")
  if os.path.isfile(bin_path):
    if importlib.util.find_spec("torch") is None:  # torch reads pytorch_model.bin; optional
      raise ConvertError(
        f"--hf_dir: {hf_dir!r} holds only pytorch_model.bin, which needs torch; "
        "install torch or save the model as safetensors"
      ) from None
    return "torch", [bin_path]
  raise ConvertError(
    f"--hf_dir: {hf_dir!r} has no model.safetensors (or pytorch_model.bin); "
    "download the weights too"
  )


def read_tensors(hf_dir: str) -> dict[str, np.ndarray]:
  """{name: float32 numpy array} of every tensor in the weight files."""
  kind, paths = _weight_files(hf_dir)
  out = {}
  for path in paths:
    if kind == "torch":
      import torch

      state = torch.load(path, map_location="cpu", weights_only=True)
      out.update({k: v.float().numpy() for k, v in state.items()})
      continue
    from safetensors import safe_open

    with safe_open(path, framework="flax") as f:  # jax arrays: bfloat16 files read too
      out.update({k: np.asarray(f.get_tensor(k).astype(np.float32)) for k in f.keys()})
  return out


def read_tokenizer(hf_dir, kind):
  """A `tokenizers.Tokenizer`: tokenizer.json, else GPT-2 byte-level BPE from vocab.json +
  merges.txt."""
  path = os.path.join(hf_dir, "tokenizer.json")
  if os.path.isfile(path):
    return tokenizer.load(path)  # its own padding and truncation off
  vocab, merges = (os.path.join(hf_dir, n) for n in ("vocab.json", "merges.txt"))
  if kind != "gpt2" or not (os.path.isfile(vocab) and os.path.isfile(merges)):
    also = " (or vocab.json + merges.txt)" if kind == "gpt2" else ""
    raise ConvertError(
      f"--hf_dir: {hf_dir!r} has no tokenizer.json{also}; save the model's "
      "tokenizer there (AutoTokenizer.from_pretrained(...).save_pretrained)"
    )
  tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(vocab, merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  if tok.token_to_id("<|endoftext|>") is not None:
    tok.add_special_tokens(["<|endoftext|>"])
  return tok


def _eos_token(hf, tok, hf_dir):
  eos = hf.get("eos_token_id")
  eos = eos[0] if isinstance(eos, list) and eos else eos
  token = tok.id_to_token(eos) if isinstance(eos, int) else None
  if token is None:
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        token = json.load(f).get("eos_token")
      token = token.get("content") if isinstance(token, dict) else token
  if token is None and tok.token_to_id("<|endoftext|>") is not None:
    token = "<|endoftext|>"
  if token is None or tok.token_to_id(token) is None:
    raise ConvertError(
      f"{hf_dir}/config.json: eos_token_id={eos!r} is not a token of the "
      "tokenizer; set the model's end-of-text token id"
    )
  return token


# ----------------------------------------------------------------------------- from_hf


def _make_model(objective, model_cfg, seed=0):
  """The model a run of `objective` trains (pretrain/objectives/registry.py)."""
  return registry.get(objective).make_model(model_cfg, nnx.Rngs(seed))


def _abstract_params(model_cfg, objective="causal_lm"):
  return objective_lib.abstract_params(registry.get(objective), model_cfg)


@dataclasses.dataclass
class Imported:
  """A Hugging Face model as a run of ours, before it is written (write_run)."""

  config: ml_collections.ConfigDict  # the run's full config (base_config's, with the model)
  model: model_config.ModelConfig  # the resolved model
  params: Any  # in the layout of model.scan_layers
  tokenizer: tokenizers.Tokenizer
  hf_dir: str
  notes: list  # heads initialised fresh or not imported


def _fresh_params(config, unscanned):
  """A freshly initialised unscanned parameter tree of the config's model, as numpy: the
  heads a file lacks come from it."""
  model = _make_model(config.objective, unscanned, config.seed)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _in_layout(params, m):
  """Imported numpy parameters as device arrays, stacked if the model scans its layers."""
  params = jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x)), params)
  return layer_stack.to_layout(params, scan=m.scan_layers)


def import_config(hf, hf_dir, tok_eos, base_config, scan_layers=True):
  """The run's full config: base_config("gpt") with the HF model and tokenizer."""
  config = base_config("gpt")
  model = ml_collections.ConfigDict(decoder.DEFAULTS)
  model.update(hf_decoder.model_fields(hf, os.path.join(hf_dir, "config.json")))
  model.update(size=hf["model_type"], vocab_multiple=1, dropout=0.0, scan_layers=scan_layers)
  config.model = model
  config.data.tokenizer.update(kind="file", eos_token=tok_eos)  # path: write_run's
  config.batch.seq_len = min(config.batch.seq_len, model.max_len)
  return config


def import_hf(
  hf_dir, base_config: Callable[[str], ml_collections.ConfigDict], scan_layers=True
) -> Imported:
  """A local HF directory as a run of ours. `base_config(kind)` gives the config it goes
  into: 'gpt' (a decoder), 'bert' or 'roberta' (an encoder), or the GLUE task ('sst2',
  'mnli', 'stsb') of an imported sequence classifier."""
  hf = read_hf_config(hf_dir)
  kind = hf.get("model_type")
  supported = hf_decoder.SUPPORTED + hf_encoder.SUPPORTED + hf_modernbert.SUPPORTED
  if kind not in supported:
    raise ConvertError(
      f"{os.path.join(hf_dir, 'config.json')}: model_type={kind!r} is not "
      f"supported; supported model types: {', '.join(supported)}"
    )
  if kind in hf_encoder.SUPPORTED:
    return _import_encoder(hf, hf_dir, base_config, scan_layers)
  if kind in hf_modernbert.SUPPORTED:
    return _import_modernbert(hf, hf_dir, base_config, scan_layers)
  hf_decoder.model_fields(hf, os.path.join(hf_dir, "config.json"))  # refuse early
  tok = read_tokenizer(hf_dir, kind)
  config = import_config(hf, hf_dir, _eos_token(hf, tok, hf_dir), base_config, scan_layers)
  m = _resolved_model(config, tok, hf_dir)
  where = os.path.join(hf_dir, _weight_files(hf_dir)[1][0])
  raw = read_tensors(hf_dir)
  names = hf_decoder.normalise_names(kind, raw)
  tensors = {names[k]: v for k, v in raw.items()}
  unscanned = dataclasses.replace(m, scan_layers=False)
  abstract = _abstract_params(unscanned)
  hf_decoder.check_tensors(kind, m, {k: v.shape for k, v in tensors.items()}, abstract, where)
  embed = "transformer.wte.weight" if kind == "gpt2" else "model.embed_tokens.weight"
  if (
    m.tie_embeddings
    and "lm_head.weight" in tensors
    and not np.array_equal(tensors["lm_head.weight"], tensors[embed])
  ):
    raise ConvertError(
      f"{where}: lm_head.weight differs from {embed} but tie_word_embeddings "
      "is true; fix config.json"
    )
  params = hf_decoder.from_hf(kind, m, tensors)
  return Imported(config, m, _in_layout(params, m), tok, hf_dir, [])


def write_run(imported: Imported, workdir: str, overwrite: bool = False) -> None:
  """A workdir with config.json, tokenizer.json and the parameters at step 0 (written whole,
  through a temporary directory: nothing is left half-written)."""
  _check_output(workdir, "--workdir", overwrite)
  _check_apart(workdir, "--workdir", imported.hf_dir)
  config = ml_collections.ConfigDict(imported.config.to_dict())
  config.data.tokenizer.path = os.path.join(os.path.abspath(workdir), "tokenizer.json")
  tmp = _temporary_dir(workdir)
  try:
    run_files.write_step_zero(tmp, config, imported.model, imported.params, imported.tokenizer)
    _replace(tmp, workdir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  if imported.notes:
    print(f"{workdir}: " + "; ".join(imported.notes), flush=True)


def import_encoder_config(hf, hf_dir, tok, nsp, base_config, scan_layers=True):
  """The run's full config: base_config('bert' or 'roberta') with the HF encoder and
  tokenizer."""
  kind = hf["model_type"]
  config = base_config("roberta" if kind == "roberta" else "bert")
  model = ml_collections.ConfigDict(encoder.DEFAULTS)
  model.update(hf_encoder.model_fields(hf, os.path.join(hf_dir, "config.json")))
  model.update(size=kind, vocab_multiple=1, dropout=0.0, scan_layers=scan_layers, nsp_head=nsp)
  config.model = model
  config.objective = "mlm_nsp" if nsp else "mlm"
  config.data.mlm.nsp = nsp
  eos = "</s>" if kind == "roberta" else "[SEP]"
  if tok.token_to_id(eos) is None:
    raise ConvertError(f"{hf_dir}/tokenizer.json: no {eos} token; give the model's own tokenizer")
  config.data.tokenizer.update(kind="file", eos_token=eos)  # path: write_run's
  config.batch.seq_len = min(config.batch.seq_len, model.max_len)
  config.data.mlm.max_predictions = min(config.data.mlm.max_predictions, config.batch.seq_len)
  return config


def _classification_config(config, hf, base_config):
  """The GLUE task's config (base_config('sst2' / 'mnli' / 'stsb'), the task with as many
  labels) for an imported BertForSequenceClassification, with its label count."""
  n = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
  task = {1: "stsb", 3: "mnli"}.get(n, "sst2")
  out = base_config(task)
  out.model = config.model
  out.model.update(num_labels=n, nsp_head=False)
  out.data.tokenizer = config.data.tokenizer
  out.batch.seq_len = config.batch.seq_len
  return out


def _encoder_tokenizer(hf_dir, kind):
  """tokenizer.json, else (BERT) vocab.txt with tokenizer_config.json's do_lower_case."""
  vocab = os.path.join(hf_dir, "vocab.txt")
  if (
    os.path.isfile(os.path.join(hf_dir, "tokenizer.json"))
    or kind != "bert"
    or not os.path.isfile(vocab)
  ):
    return read_tokenizer(hf_dir, kind)
  lowercase = True
  path = os.path.join(hf_dir, "tokenizer_config.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      lowercase = bool(json.load(f).get("do_lower_case", True))
  return tokenizer._load_vocab_txt(vocab, lowercase)


def _resolved_model(config, tok, hf_dir):
  """The imported config's model section, checked and resolved against the tokenizer."""
  config_checks.check_model(config.model)
  m = model_config.resolve(config.model, tok.get_vocab_size())
  if tok.get_vocab_size() > m.vocab_size:
    raise ConvertError(
      f"{hf_dir}: the tokenizer has {tok.get_vocab_size()} tokens but "
      f"vocab_size={m.vocab_size}; give the model's own tokenizer"
    )
  return m


def _import_encoder(hf, hf_dir, base_config, scan_layers):
  """import_hf for BERT / RoBERTa: fills what the file has, initialises the missing heads."""
  kind = hf["model_type"]
  where = os.path.join(hf_dir, "config.json")
  hf_encoder.model_fields(hf, where)  # refuse early
  tok = _encoder_tokenizer(hf_dir, kind)
  if kind == "bert":
    tokenizer.check_bert_specials(tok)
  raw = read_tensors(hf_dir)
  names = hf_encoder.normalise_names(kind, raw)
  tensors = {names[k]: v for k, v in raw.items()}
  present = hf_encoder.groups_present(kind, tensors)
  nsp = kind == "bert" and ("nsp" in present or "mlm" not in present)
  config = import_encoder_config(hf, hf_dir, tok, nsp, base_config, scan_layers)
  if "classifier" in present:  # BertForSequenceClassification
    config = _classification_config(config, hf, base_config)
  m = _resolved_model(config, tok, hf_dir)
  where = os.path.join(hf_dir, _weight_files(hf_dir)[1][0])
  pad_id = hf_encoder.pad_id(hf)
  unscanned = dataclasses.replace(m, scan_layers=False)
  present, tied, extras = hf_encoder.check_tensors(
    kind,
    m,
    {k: v.shape for k, v in tensors.items()},
    _abstract_params(unscanned, config.objective),
    where,
    pad_id=pad_id,
  )
  for name, source in tied.items():
    if not np.array_equal(tensors[name], tensors[source]):
      raise ConvertError(
        f"{where}: {name} differs from {source}, which it is tied to; only "
        "tied masked-LM decoders convert"
      )
  fresh = _fresh_params(config, unscanned)
  params = _in_layout(hf_encoder.from_hf(kind, m, tensors, fresh, pad_id=pad_id), m)
  missing = [
    g
    for g, key in (("pooler", "pooler"), ("mlm", "mlm_dense"), ("nsp", "nsp"))
    if g not in present and key in params
  ]
  notes = []
  if missing:
    notes.append(f"initialised fresh (not in the file): {', '.join(missing)}")
  if extras:
    heads = sorted({e.split(".")[0] for e in extras})
    notes.append(f"not imported: the task head {', '.join(heads)}")
  return Imported(config, m, params, tok, hf_dir, notes)


def import_modernbert_config(hf, hf_dir, tok, base_config, scan_layers=True):
  """The run's full config: base_config('modernbert') with the HF model and tokenizer."""
  config = base_config("modernbert")
  model = ml_collections.ConfigDict(encoder.DEFAULTS)
  model.update(hf_modernbert.model_fields(hf, os.path.join(hf_dir, "config.json")))
  model.update(size="modernbert", vocab_multiple=1, dropout=0.0, scan_layers=scan_layers)
  config.model = model
  tokenizer.check_bert_specials(tok)
  config.data.tokenizer.update(kind="file", eos_token="[SEP]")  # path: write_run's
  config.batch.seq_len = min(config.batch.seq_len, model.max_len)
  config.data.mlm.max_predictions = min(config.data.mlm.max_predictions, config.batch.seq_len)
  return config


def _import_modernbert(hf, hf_dir, base_config, scan_layers):
  """import_hf for ModernBertForMaskedLM or ModernBertModel (its masked-LM head fresh)."""
  hf_modernbert.model_fields(hf, os.path.join(hf_dir, "config.json"))  # refuse early
  tok = read_tokenizer(hf_dir, "modernbert")
  config = import_modernbert_config(hf, hf_dir, tok, base_config, scan_layers)
  m = _resolved_model(config, tok, hf_dir)
  where = os.path.join(hf_dir, _weight_files(hf_dir)[1][0])
  raw = read_tensors(hf_dir)
  names = hf_modernbert.normalise_names(raw)
  tensors = {names[k]: v for k, v in raw.items()}
  present = hf_modernbert.groups_present(tensors)
  unscanned = dataclasses.replace(m, scan_layers=False)
  abstract = _abstract_params(unscanned, config.objective)
  expected = jax.eval_shape(lambda p: hf_modernbert.to_hf(m, p, groups=present), abstract)
  tied = {"decoder.weight": hf_modernbert.PREFIX + "embeddings.tok_embeddings.weight"}
  hf_decoder.check_shapes(
    {k: tuple(v.shape) for k, v in expected.items()},
    {k: v.shape for k, v in tensors.items()},
    where,
    "encoder",
    lambda name: name in tied,
  )
  for name, source in tied.items():
    if name in tensors and not np.array_equal(tensors[name], tensors[source]):
      raise ConvertError(f"{where}: {name} differs from {source}, which it is tied to")
  params = _in_layout(hf_modernbert.from_hf(m, tensors, _fresh_params(config, unscanned)), m)
  notes = [] if "mlm" in present else ["initialised fresh (not in the file): mlm"]
  return Imported(config, m, params, tok, hf_dir, notes)


# ----------------------------------------------------------------------------- to_hf


def load_params(
  workdir: str, step: int | None = None
) -> tuple[model_config.ModelConfig, dict, ml_collections.ConfigDict, int]:
  """(resolved model, unscanned parameters as numpy, run config, step) of a run's checkpoint."""

  def check(config, m):  # before any array is read; hf_type refuses what does not convert
    if config.objective != "causal_lm" and hf_modernbert.is_modern(m):
      hf_modernbert.check_exportable(m, config.objective)
    elif config.objective != "causal_lm":
      hf_encoder.hf_type(m, config.objective)
    else:
      hf_decoder.hf_type(m)

  m, params, config, step = loading.load_params(workdir, step, check)
  params = layer_stack.to_layout(params, scan=False)
  m = dataclasses.replace(m, scan_layers=False)
  return m, jax.tree.map(np.asarray, params), config, step


def load_model(workdir: str, step: int | None = None) -> nnx.Module:
  """Our Decoder (or Encoder) with a run's checkpoint parameters (unscanned)."""
  m, params, config, _ = load_params(workdir, step)
  return loading.with_params(config.objective, m, params)


def export_hf(
  workdir: str, hf_dir: str, step: int | None = None, overwrite: bool = False
) -> tuple[int, bool]:
  """A run's checkpoint -> an HF directory: config.json, model.safetensors, tokenizer files."""
  from safetensors.numpy import save_file

  _check_output(hf_dir, "--hf_dir", overwrite)
  _check_apart(hf_dir, "--hf_dir", workdir)
  m, params, config, step = load_params(workdir, step)
  tok_path = os.path.join(workdir, "tokenizer.json")
  tok = None
  if os.path.isfile(tok_path):
    tok = tokenizer.load(tok_path)
  eos = config.data.tokenizer.eos_token
  eos_id = tok.token_to_id(eos) if tok is not None else None
  if config.objective != "causal_lm":
    tensors, hf, specials = _encoder_to_hf(m, params, tok, config.objective)
  else:
    kind = hf_decoder.hf_type(m)
    tensors = hf_decoder.to_hf(kind, m, params)
    hf = hf_decoder.hf_config(m, bos_id=eos_id, eos_id=eos_id)
    specials = {} if eos_id is None else dict(bos_token=eos, eos_token=eos)
  tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}

  out = os.path.abspath(hf_dir)
  tmp = _temporary_dir(out)
  try:
    save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
      json.dump(hf, f, indent=2, sort_keys=True)
    if tok is not None:
      shutil.copyfile(tok_path, os.path.join(tmp, "tokenizer.json"))
      with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(
          dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=m.max_len, **specials),
          f,
          indent=2,
        )
    _replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  return step, tok is not None


# The special tokens of each encoder flavour: tokenizer_config.json name -> token.
ENCODER_SPECIALS = {
  "bert": dict(
    pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
  ),
  "roberta": dict(
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<pad>",
    unk_token="<unk>",
    cls_token="<s>",
    sep_token="</s>",
    mask_token="<mask>",
  ),
}


def _specials(tok, kind, roles):
  """(tokenizer_config's special tokens of `kind` that `tok` has, {role: its id} for `roles`)."""
  specials = {
    k: v
    for k, v in ENCODER_SPECIALS[kind].items()
    if tok is not None and tok.token_to_id(v) is not None
  }
  ids = {k: tok.token_to_id(specials[k + "_token"]) for k in roles if k + "_token" in specials}
  return specials, ids


def _encoder_to_hf(m, params, tok, objective):
  """(tensors, config.json dict, tokenizer_config specials) of an encoder run."""
  if hf_modernbert.is_modern(m):
    return _modernbert_to_hf(m, params, tok, objective)
  kind, arch = hf_encoder.hf_type(m, objective)
  specials, ids = _specials(tok, kind, ("pad", "bos", "eos"))
  groups = {
    "BertForPreTraining": ("encoder", "mlm", "pooler", "nsp"),
    "BertForSequenceClassification": ("encoder", "pooler", "classifier"),
  }.get(arch, ("encoder", "mlm"))
  tensors = hf_encoder.to_hf(kind, m, params, groups=groups, pad_id=ids.get("pad", 1))
  return tensors, hf_encoder.hf_config(m, ids, objective), specials


def _modernbert_to_hf(m, params, tok, objective):
  hf_modernbert.check_exportable(m, objective)
  specials, ids = _specials(tok, "bert", ("pad", "cls", "sep", "mask"))
  return hf_modernbert.to_hf(m, params), hf_modernbert.hf_config(m, ids), specials
