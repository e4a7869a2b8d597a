r"""Hugging Face GPT-2 / Llama decoders and BERT / RoBERTa encoders <-> our runs.

  python -m models.convert from_hf --hf_dir=gpt2-local --workdir=runs/gpt2 [--overwrite]
  python -m models.convert to_hf --workdir=runs/gpt2 --hf_dir=export/gpt2 [--step=N]

from_hf reads a local HF directory (config.json; model.safetensors, its sharded index, or
pytorch_model.bin when torch is installed; tokenizer.json, or GPT-2's vocab.json + merges.txt)
and writes a workdir that `pretrain.evaluate` and `config.init_from` accept: config.json (the
configs/gpt.py smoke config with the model section replaced and the run's tokenizer.json as
data.tokenizer), tokenizer.json and a checkpoint at step 0 (float32, dropout 0, layers stacked
unless --noscan_layers). to_hf writes config.json, model.safetensors (float32) and the run's
tokenizer from a workdir's checkpoint, scanned or not. Either writes nothing unless every
check passes. Mappings: models/hf_decoder.py and models/hf_encoder.py.

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
import json
import os
import shutil
import tempfile

import numpy as np
from absl import app, flags, logging

from pretrain.ground import errors
from models import hf_decoder
from models import hf_encoder

ConvertError = hf_decoder.ConvertError

COMMANDS = ("from_hf", "to_hf")


# ----------------------------------------------------------------------------- reading HF


def _check_output(path, flag, overwrite):
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)) and not overwrite:
    raise ConvertError(f"{flag}: {path!r} exists and is not empty; choose another directory or "
                       "pass --overwrite")


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


def read_hf_config(hf_dir):
  if not os.path.isdir(hf_dir):
    raise ConvertError(f"--hf_dir: {hf_dir!r} is not a local directory; download the model first "
                       "(e.g. `huggingface-cli download <name> --local-dir <dir>`)")
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
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise ConvertError(f"--hf_dir: {hf_dir!r} holds only pytorch_model.bin, which needs torch; "
                         "install torch or save the model as safetensors") from None
    return "torch", [bin_path]
  raise ConvertError(f"--hf_dir: {hf_dir!r} has no model.safetensors (or pytorch_model.bin); "
                     "download the weights too")


def read_tensors(hf_dir):
  """{name: float32 numpy array} of every tensor in the weight files."""
  kind, paths = _weight_files(hf_dir)
  out = {}
  for path in paths:
    if kind == "torch":
      import torch  # pylint: disable=g-import-not-at-top
      state = torch.load(path, map_location="cpu", weights_only=True)
      out.update({k: v.float().numpy() for k, v in state.items()})
      continue
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(path, framework="flax") as f:  # jax arrays: bfloat16 files read too
      out.update({k: np.asarray(f.get_tensor(k).astype(np.float32)) for k in f.keys()})
  return out


def read_tokenizer(hf_dir, kind):
  """A `tokenizers.Tokenizer`: tokenizer.json, else GPT-2 byte-level BPE from vocab.json +
  merges.txt."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top
  path = os.path.join(hf_dir, "tokenizer.json")
  if os.path.isfile(path):
    return tokenizer.load(path)  # its own padding and truncation off
  vocab, merges = (os.path.join(hf_dir, n) for n in ("vocab.json", "merges.txt"))
  if kind != "gpt2" or not (os.path.isfile(vocab) and os.path.isfile(merges)):
    also = " (or vocab.json + merges.txt)" if kind == "gpt2" else ""
    raise ConvertError(f"--hf_dir: {hf_dir!r} has no tokenizer.json{also}; save the model's "
                       "tokenizer there (AutoTokenizer.from_pretrained(...).save_pretrained)")
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
    raise ConvertError(f"{hf_dir}/config.json: eos_token_id={eos!r} is not a token of the "
                       "tokenizer; set the model's end-of-text token id")
  return token


# ----------------------------------------------------------------------------- from_hf


def _make_model(objective, model_cfg, seed=0):
  """The model a run of `objective` trains (pretrain/objectives/registry.py)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from pretrain.objectives import registry  # pylint: disable=g-import-not-at-top
  return registry.get(objective).make_model(model_cfg, nnx.Rngs(seed))


def _abstract_params(model_cfg, objective="causal_lm"):
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.state(
      _make_model(objective, model_cfg), nnx.Param)))


def import_config(hf, hf_dir, workdir, tok_eos, scan_layers=True):
  """The run's full config: configs/gpt.py (smoke) with the HF model and tokenizer."""
  from configs import gpt  # pylint: disable=g-import-not-at-top
  from models import decoder  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  config = gpt.get_config("smoke")
  model = ml_collections.ConfigDict(decoder.DEFAULTS)
  model.update(hf_decoder.model_fields(hf, os.path.join(hf_dir, "config.json")))
  model.update(size=hf["model_type"], vocab_multiple=1, dropout=0.0, scan_layers=scan_layers)
  config.model = model
  config.data.tokenizer.update(kind="file", path=os.path.join(os.path.abspath(workdir),
                                                                "tokenizer.json"),
                               eos_token=tok_eos)
  config.batch.seq_len = min(config.batch.seq_len, model.max_len)
  return config


def import_hf(hf_dir, workdir, overwrite=False, scan_layers=True):
  """HF directory -> a workdir with config.json, tokenizer.json and a step-0 checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from models import layer_stack  # pylint: disable=g-import-not-at-top

  _check_output(workdir, "--workdir", overwrite)
  _check_apart(workdir, "--workdir", hf_dir)
  hf = read_hf_config(hf_dir)
  kind = hf.get("model_type")
  supported = hf_decoder.SUPPORTED + hf_encoder.SUPPORTED
  if kind not in supported:
    raise ConvertError(f"{os.path.join(hf_dir, 'config.json')}: model_type={kind!r} is not "
                       f"supported; supported model types: {', '.join(supported)}")
  if kind in hf_encoder.SUPPORTED:
    return _import_encoder(hf, hf_dir, workdir, scan_layers)
  hf_decoder.model_fields(hf, os.path.join(hf_dir, "config.json"))  # refuse early
  tok = read_tokenizer(hf_dir, kind)
  config = import_config(hf, hf_dir, workdir, _eos_token(hf, tok, hf_dir), scan_layers)
  m = _resolved_model(config, tok, hf_dir)
  where = os.path.join(hf_dir, _weight_files(hf_dir)[1][0])
  raw = read_tensors(hf_dir)
  names = hf_decoder.normalise_names(kind, raw)
  tensors = {names[k]: v for k, v in raw.items()}
  unscanned = ml_collections.ConfigDict(dict(m.to_dict(), scan_layers=False))
  abstract = _abstract_params(unscanned)
  hf_decoder.check_tensors(kind, m, {k: v.shape for k, v in tensors.items()}, abstract, where)
  embed = "transformer.wte.weight" if kind == "gpt2" else "model.embed_tokens.weight"
  if m.tie_embeddings and "lm_head.weight" in tensors and not np.array_equal(
      tensors["lm_head.weight"], tensors[embed]):
    raise ConvertError(f"{where}: lm_head.weight differs from {embed} but tie_word_embeddings "
                       "is true; fix config.json")
  params = hf_decoder.from_hf(kind, m, tensors)
  params = jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x)), params)
  params = layer_stack.to_layout(params, scan=m.scan_layers)
  _write_run(workdir, config, m, params, tok)
  return m


def _write_run(workdir, config, m, params, tok):
  """A workdir with config.json, tokenizer.json and `params` at step 0 (written whole)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top
  from pretrain.objectives import registry  # pylint: disable=g-import-not-at-top
  from pretrain.state import checkpointing
  from pretrain.training import optimizer, steps
  tmp = _temporary_dir(workdir)
  try:
    checkpointing.write_run_files(tmp, config, m, tok)
    tok_id = tokenizer.identity(tokenizer.load(os.path.join(tmp, "tokenizer.json")))
    _, logical = steps.model_logical_specs(registry.get(config.objective), m)
    tx, _ = optimizer.make(config.optimizer, config.train.total_steps, logical)
    _, rng = jax.random.split(jax.random.PRNGKey(config.seed))
    state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng)
    meta = checkpointing.run_meta(m, tok_id, 0, config.seed,
                                  optimizer_name=optimizer.name(config.optimizer))
    ckpt = checkpointing.Checkpointer(os.path.join(tmp, "checkpoints"))
    ckpt.save(0, state, meta, force=True)
    ckpt.close()
    _replace(tmp, workdir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def import_encoder_config(hf, hf_dir, workdir, tok, nsp, scan_layers=True):
  """The run's full config: configs/bert.py (smoke) with the HF encoder and tokenizer."""
  from configs import bert  # pylint: disable=g-import-not-at-top
  from models import encoder  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  kind = hf["model_type"]
  config = bert.get_config(f"smoke,recipe={'roberta' if kind == 'roberta' else 'bert'}")
  model = ml_collections.ConfigDict(encoder.DEFAULTS)
  model.update(hf_encoder.model_fields(hf, os.path.join(hf_dir, "config.json")))
  model.update(size=kind, vocab_multiple=1, dropout=0.0, scan_layers=scan_layers, nsp_head=nsp)
  config.model = model
  config.objective = "mlm_nsp" if nsp else "mlm"
  config.data.mlm.nsp = nsp
  eos = "</s>" if kind == "roberta" else "[SEP]"
  if tok.token_to_id(eos) is None:
    raise ConvertError(f"{hf_dir}/tokenizer.json: no {eos} token; give the model's own "
                       "tokenizer")
  config.data.tokenizer.update(kind="file", path=os.path.join(os.path.abspath(workdir),
                                                                "tokenizer.json"),
                               eos_token=eos)
  config.batch.seq_len = min(config.batch.seq_len, model.max_len)
  config.data.mlm.max_predictions = min(config.data.mlm.max_predictions, config.batch.seq_len)
  return config


def _classification_config(config, hf):
  """configs/finetune/glue.py's config for an imported BertForSequenceClassification: its
  label count, and the GLUE task with that many labels (sst2, mnli, stsb) as the data."""
  from configs.finetune import glue  # pylint: disable=g-import-not-at-top
  n = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
  task = {1: "stsb", 3: "mnli"}.get(n, "sst2")
  out = glue.get_config(task)
  out.model = config.model
  out.model.update(num_labels=n, nsp_head=False)
  out.data.tokenizer = config.data.tokenizer
  out.batch.seq_len = config.batch.seq_len
  return out


def _encoder_tokenizer(hf_dir, kind):
  """tokenizer.json, else (BERT) vocab.txt with tokenizer_config.json's do_lower_case."""
  from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top
  vocab = os.path.join(hf_dir, "vocab.txt")
  if os.path.isfile(os.path.join(hf_dir, "tokenizer.json")) or kind != "bert" or \
      not os.path.isfile(vocab):
    return read_tokenizer(hf_dir, kind)
  lowercase = True
  path = os.path.join(hf_dir, "tokenizer_config.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      lowercase = bool(json.load(f).get("do_lower_case", True))
  return tokenizer._load_vocab_txt(vocab, lowercase)  # pylint: disable=protected-access


def _resolved_model(config, tok, hf_dir):
  """The imported config's model section, checked and resolved against the tokenizer."""
  from models import layers  # pylint: disable=g-import-not-at-top
  from pretrain.training import config_checks  # pylint: disable=g-import-not-at-top
  config_checks.check_model(config.model)
  m = layers.resolve(config.model, tok.get_vocab_size())
  if tok.get_vocab_size() > m.vocab_size:
    raise ConvertError(f"{hf_dir}: the tokenizer has {tok.get_vocab_size()} tokens but "
                       f"vocab_size={m.vocab_size}; give the model's own tokenizer")
  return m


def _import_encoder(hf, hf_dir, workdir, scan_layers):
  """import_hf for BERT / RoBERTa: fills what the file has, initialises the missing heads."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from models import layer_stack  # pylint: disable=g-import-not-at-top
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
  config = import_encoder_config(hf, hf_dir, workdir, tok, nsp, scan_layers)
  if "classifier" in present:  # BertForSequenceClassification
    config = _classification_config(config, hf)
  m = _resolved_model(config, tok, hf_dir)
  where = os.path.join(hf_dir, _weight_files(hf_dir)[1][0])
  pad_id = hf_encoder.pad_id(hf)
  unscanned = ml_collections.ConfigDict(dict(m.to_dict(), scan_layers=False))
  present, tied, extras = hf_encoder.check_tensors(
      kind, m, {k: v.shape for k, v in tensors.items()},
      _abstract_params(unscanned, config.objective), where, pad_id=pad_id)
  for name, source in tied.items():
    if not np.array_equal(tensors[name], tensors[source]):
      raise ConvertError(f"{where}: {name} differs from {source}, which it is tied to; only "
                         "tied masked-LM decoders convert")
  fresh = nnx.to_pure_dict(nnx.state(_make_model(config.objective, unscanned, config.seed),
                                     nnx.Param))
  params = hf_encoder.from_hf(kind, m, tensors, jax.tree.map(np.asarray, fresh), pad_id=pad_id)
  params = jax.tree.map(lambda x: jnp.asarray(np.ascontiguousarray(x)), params)
  params = layer_stack.to_layout(params, scan=m.scan_layers)
  missing = [g for g, key in (("pooler", "pooler"), ("mlm", "mlm_dense"), ("nsp", "nsp"))
             if g not in present and key in params]
  notes = []
  if missing:
    notes.append(f"initialised fresh (not in the file): {', '.join(missing)}")
  if extras:
    heads = sorted({e.split(".")[0] for e in extras})
    notes.append(f"not imported: the task head {', '.join(heads)}")
  _write_run(workdir, config, m, params, tok)
  if notes:
    print(f"{workdir}: " + "; ".join(notes), flush=True)
  return m


# ----------------------------------------------------------------------------- to_hf


def load_params(workdir, step=None):
  """(resolved model, unscanned parameters as numpy, run config, step) of a run's checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from models import layer_stack  # pylint: disable=g-import-not-at-top
  from pretrain.state import checkpointing  # pylint: disable=g-import-not-at-top

  def check(config, m):  # before any array is read; hf_type refuses what does not convert
    if config.objective != "causal_lm":
      hf_encoder.hf_type(m, config.objective)
    else:
      hf_decoder.hf_type(m)

  m, params, config, step = checkpointing.load_params(workdir, step, check)
  params = layer_stack.to_layout(params, scan=False)
  m = ml_collections.ConfigDict(dict(m.to_dict(), scan_layers=False))
  return m, jax.tree.map(np.asarray, params), config, step


def load_model(workdir, step=None):
  """Our Decoder (or Encoder) with a run's checkpoint parameters (unscanned)."""
  from pretrain.state import checkpointing  # pylint: disable=g-import-not-at-top
  m, params, config, _ = load_params(workdir, step)
  return checkpointing.with_params(config.objective, m, params)


def export_hf(workdir, hf_dir, step=None, overwrite=False):
  """A run's checkpoint -> an HF directory: config.json, model.safetensors, tokenizer files."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  _check_output(hf_dir, "--hf_dir", overwrite)
  _check_apart(hf_dir, "--hf_dir", workdir)
  m, params, config, step = load_params(workdir, step)
  tok_path = os.path.join(workdir, "tokenizer.json")
  tok = None
  if os.path.isfile(tok_path):
    from input_pipeline import tokenizer  # pylint: disable=g-import-not-at-top
    tok = tokenizer.load(tok_path)
  eos = config.data.tokenizer.eos_token
  eos_id = tok.token_to_id(eos) if tok is not None else None
  if config.objective != "causal_lm":
    tensors, hf, specials = _encoder_to_hf(m, params, tok, config.objective)
  else:
    kind = hf_decoder.hf_type(m)
    tensors = hf_decoder.to_hf(kind, m, params)
    hf = hf_decoder.hf_config(m.to_dict(), bos_id=eos_id, eos_id=eos_id)
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
        json.dump(dict(tokenizer_class="PreTrainedTokenizerFast",
                       model_max_length=m.max_len, **specials), f, indent=2)
    _replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)
  return step, tok is not None


# The special tokens of each encoder flavour: tokenizer_config.json name -> token.
ENCODER_SPECIALS = {
    "bert": dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                 mask_token="[MASK]"),
    "roberta": dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                    cls_token="<s>", sep_token="</s>", mask_token="<mask>"),
}


def _encoder_to_hf(m, params, tok, objective):
  """(tensors, config.json dict, tokenizer_config specials) of an encoder run."""
  kind, arch = hf_encoder.hf_type(m, objective)
  specials = {k: v for k, v in ENCODER_SPECIALS[kind].items()
              if tok is not None and tok.token_to_id(v) is not None}
  ids = {k: tok.token_to_id(specials[k + "_token"]) for k in ("pad", "bos", "eos")
         if k + "_token" in specials}
  groups = {"BertForPreTraining": ("encoder", "mlm", "pooler", "nsp"),
            "BertForSequenceClassification": ("encoder", "pooler", "classifier")}.get(
                arch, ("encoder", "mlm"))
  tensors = hf_encoder.to_hf(kind, m, params, groups=groups, pad_id=ids.get("pad", 1))
  return tensors, hf_encoder.hf_config(m.to_dict(), ids, objective), specials


# ----------------------------------------------------------------------------- CLI


def run(command, hf_dir, workdir, step=None, overwrite=False, scan_layers=True):
  """One subcommand; a line on stdout saying what was written."""
  if command not in COMMANDS:
    raise ConvertError(f"command: {command!r}; use one of {', '.join(COMMANDS)}")
  for flag, value in (("--hf_dir", hf_dir), ("--workdir", workdir)):
    if not value:
      raise ConvertError(f"{flag}: required")
  if command == "from_hf":
    m = import_hf(hf_dir, workdir, overwrite=overwrite, scan_layers=scan_layers)
    print(f"wrote {workdir}: {m.size} model, {m.num_layers} layers, d_model {m.d_model}, "
          f"vocab {m.vocab_size}; checkpoint at step 0", flush=True)
  else:
    step, with_tok = export_hf(workdir, hf_dir, step=step, overwrite=overwrite)
    print(f"wrote {hf_dir} from step {step} of {workdir}"
          + ("" if with_tok else " (the run has no tokenizer.json: weights and config only)"),
          flush=True)


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory.")
  flags.DEFINE_string("workdir", None, "The run's directory.")
  flags.DEFINE_integer("step", None, "to_hf: the checkpoint's step (default: the latest).")
  flags.DEFINE_bool("overwrite", False, "Replace a non-empty output directory.")
  flags.DEFINE_bool("scan_layers", True, "from_hf: save the layers stacked (scanned).")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(f"give one command: {' | '.join(COMMANDS)}")
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  try:
    run(argv[1], f.hf_dir, f.workdir, step=f.step, overwrite=f.overwrite,
        scan_layers=f.scan_layers)
  except errors.UserError as e:
    errors.fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: errors.parse_flags(argv, define_flags))
