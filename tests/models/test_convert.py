"""Hugging Face GPT-2 / Llama <-> our runs: same logits, lossless round trips, clear refusals."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp
from safetensors.numpy import load_file

from models import model_config
from models.hf import decoder as hf_decoder
from pretrain import convert
from pretrain.ground import errors
from pretrain.state import hf_conversion
from tests.helpers import randomise_hf

VOCAB = 300
TEXT = (
  "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
  "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. "
) * 20


@pytest.fixture(scope="module")
def tok():
  """A byte-level BPE of VOCAB tokens, <|endoftext|> included."""
  from input_pipeline import tokenizer

  t = tokenizer._train_bpe([TEXT], VOCAB, "<|endoftext|>")
  assert t.get_vocab_size() <= VOCAB
  return t


def _hf_gpt2(path, tok):
  eos = tok.token_to_id("<|endoftext|>")
  cfg = transformers.GPT2Config(
    n_layer=2,
    n_head=4,
    n_embd=64,
    vocab_size=VOCAB,
    n_positions=64,
    bos_token_id=eos,
    eos_token_id=eos,
  )
  model = randomise_hf(transformers.GPT2LMHeadModel(cfg), 0).eval()
  model.save_pretrained(path)
  tok.model.save(str(path))  # vocab.json + merges.txt: the tokenizer is rebuilt from them
  return model


def _hf_llama(path, tok):
  eos = tok.token_to_id("<|endoftext|>")
  cfg = transformers.LlamaConfig(
    num_hidden_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=VOCAB,
    max_position_embeddings=64,
    bos_token_id=eos,
    eos_token_id=eos,
    rope_parameters={"rope_type": "default", "rope_theta": 5e5},
  )
  model = randomise_hf(transformers.LlamaForCausalLM(cfg), 1).eval()
  model.save_pretrained(path)
  tok.save(str(path / "tokenizer.json"))
  return model


MAKERS = {"gpt2": _hf_gpt2, "llama": _hf_llama}
TOKENS = np.random.default_rng(0).integers(0, VOCAB, (2, 16))


def _hf_logits(model):
  with torch.no_grad():
    return model(torch.tensor(TOKENS)).logits.numpy()


def _our_logits(workdir):
  return np.asarray(hf_conversion.load_model(workdir)(jnp.asarray(TOKENS)))


@pytest.fixture(scope="module", params=sorted(MAKERS))
def imported(request, tok, tmp_path_factory):
  """(kind, HF model, its directory, our workdir imported from it)."""
  root = tmp_path_factory.mktemp(request.param)
  model = MAKERS[request.param](root / "hf", tok)
  convert.from_hf(str(root / "hf"), str(root / "run"))
  return request.param, model, root, str(root / "run")


@pytest.mark.slow
def test_import_matches_hf_logits(imported, tok):
  kind, model, _, workdir = imported
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  m = saved["resolved_model"]
  assert m["vocab_size"] == VOCAB and m["max_len"] == 64 and m["size"] == kind
  if kind == "llama":
    assert (m["num_kv_heads"], m["rope_theta"], m["norm_eps"]) == (2, 5e5, 1e-6)
    assert not m["tie_embeddings"] and m["d_ff"] == 128
  else:
    assert m["gelu_approximate"] and m["tie_embeddings"] and m["use_bias"]
  assert saved["data"]["tokenizer"] == dict(
    saved["data"]["tokenizer"], kind="file", path=os.path.join(workdir, "tokenizer.json")
  )
  from pretrain.state import run_files

  ours, theirs = run_files.run_tokenizer(workdir), tok
  text = TEXT[:200] + " <|endoftext|> naïve"
  assert ours.encode(text).ids == theirs.encode(text).ids
  assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
  np.testing.assert_allclose(_our_logits(workdir), _hf_logits(model), atol=1e-4, rtol=0)


def test_workdir_reads_like_a_run(imported):
  """What pretrain.evaluate and config.init_from check: the meta's model and tokenizer."""
  from input_pipeline import tokenizer
  from pretrain.state import compatibility, run_files

  _, _, _, workdir = imported
  config = run_files.run_config(workdir)
  tok = run_files.run_tokenizer(workdir)
  ckpt = run_files.open_run(workdir, "config.init_from")
  try:
    assert ckpt.all_steps() == [0]
    meta = ckpt.meta(0)
    assert meta["tokenizer"] == tokenizer.identity(tok)
    assert meta["data"]["step"] == 0
    model = model_config.resolve(config.model, tok.get_vocab_size())
    compatibility.check_compatible(meta["model"], model, workdir)
  finally:
    ckpt.close()


def test_export_loads_in_transformers_and_round_trips(imported):
  kind, model, root, workdir = imported
  out = root / "export"
  hf_conversion.export_hf(workdir, str(out))
  loaded, info = transformers.AutoModelForCausalLM.from_pretrained(
    str(out), output_loading_info=True
  )
  assert type(loaded).__name__ == hf_decoder.ARCHITECTURES[kind]
  for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    assert not info.get(key), (key, info[key])
  np.testing.assert_allclose(_hf_logits(loaded.eval()), _our_logits(workdir), atol=1e-4, rtol=0)
  # The exported tensors are the original ones, bit for bit.
  original, exported = (
    load_file(str(root / "hf" / "model.safetensors")),
    load_file(str(out / "model.safetensors")),
  )
  assert set(exported) == set(original) - {"lm_head.weight"} or set(exported) == set(original)
  for name, value in exported.items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)
  # import(export(x)) == x for every parameter.
  convert.from_hf(str(out), str(root / "again"))
  _, a, _, _ = hf_conversion.load_params(workdir)
  _, b, _, _ = hf_conversion.load_params(str(root / "again"))
  flat_a, flat_b = _flatten(a), _flatten(b)
  assert flat_a.keys() == flat_b.keys()
  for name in flat_a:
    np.testing.assert_array_equal(flat_a[name], flat_b[name], err_msg=name)
  assert (out / "tokenizer.json").is_file()


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix: np.asarray(tree)}
  return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}


def test_unscanned_checkpoint_exports_the_same(imported, tmp_path):
  _, _, root, _ = imported
  convert.from_hf(str(root / "hf"), str(tmp_path / "run"), scan_layers=False)
  with open(tmp_path / "run" / "config.json") as f:
    assert json.load(f)["resolved_model"]["scan_layers"] is False
  hf_conversion.export_hf(str(tmp_path / "run"), str(tmp_path / "export"))
  scanned = root / "scanned_export"
  hf_conversion.export_hf(imported[3], str(scanned))
  a, b = (
    load_file(str(tmp_path / "export" / "model.safetensors")),
    load_file(str(scanned / "model.safetensors")),
  )
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ----------------------------------------------------------------------------- refusals


def _refused(fn, *args, match, **kw):
  with pytest.raises(errors.UserError, match=match) as e:
    fn(*args, **kw)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_refusals_write_nothing(tok, tmp_path):
  run = tmp_path / "run"
  _refused(convert.from_hf, "gpt2", str(run), match="download")
  _refused(convert.from_hf, str(tmp_path / "missing"), str(run), match="download")
  no_weights = tmp_path / "no_weights"
  no_weights.mkdir()
  cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=VOCAB)
  cfg.save_pretrained(no_weights)
  tok.model.save(str(no_weights))
  _refused(convert.from_hf, str(no_weights), str(run), match="no model.safetensors")
  other = tmp_path / "t5"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "t5"}))
  message = _refused(convert.from_hf, str(other), str(run), match="model_type")
  assert "gpt2, llama" in message
  scaled = tmp_path / "scaled"
  scaled.mkdir()
  (scaled / "config.json").write_text(
    json.dumps({"model_type": "llama", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
  )
  _refused(convert.from_hf, str(scaled), str(run), match="rope_scaling")
  (scaled / "config.json").write_text(json.dumps({"model_type": "llama", "attention_bias": True}))
  _refused(convert.from_hf, str(scaled), str(run), match="attention_bias")
  assert not run.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_existing_workdir_needs_overwrite(imported, tmp_path):
  _, _, root, _ = imported
  run = tmp_path / "run"
  run.mkdir()
  (run / "notes.txt").write_text("keep")
  _refused(convert.from_hf, str(root / "hf"), str(run), match="--overwrite")
  assert os.listdir(run) == ["notes.txt"]
  _refused(hf_conversion.export_hf, imported[3], str(run), match="--overwrite")
  assert os.listdir(run) == ["notes.txt"]
  _refused(
    hf_conversion.export_hf, imported[3], imported[3], match="holds the input", overwrite=True
  )
  _refused(convert.from_hf, str(root / "hf"), str(root), match="holds the input", overwrite=True)
  convert.from_hf(str(root / "hf"), str(run), overwrite=True)
  assert sorted(os.listdir(run)) == ["checkpoints", "config.json", "tokenizer.json"]


@pytest.mark.parametrize(
  "fields,match",
  [
    (dict(norm="rmsnorm"), "config.model.norm"),
    (dict(use_bias=False), "config.model.use_bias"),
    (dict(position="rope", mlp="gelu", norm="rmsnorm"), "config.model.mlp"),
    (dict(tie_embeddings=False), "config.model.tie_embeddings"),
  ],
)
def test_export_refuses_what_hf_cannot_express(fields, match):
  from configs import gpt

  model = gpt.get_config("smoke").model
  model.update(fields)
  _refused(hf_decoder.hf_type, model_config.resolve(model, 100), match=match)


@pytest.mark.slow
def test_cli_reports_one_line(tmp_path, entry_point):
  out = entry_point("pretrain.convert", "from_hf", "--hf_dir=gpt2", f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip().startswith("error: --hf_dir:") and "\n" not in out.stderr.strip()
  assert not (tmp_path / "run").exists()


def test_greedy_generation_matches_transformers(imported):
  """The imported model continues a batch of prompts greedily with the KV cache exactly as
  transformers' generate does (GPT-2: learned positions; Llama: RoPE, GQA)."""
  from models import decode
  from pretrain.state import loading

  _, model, _, workdir = imported
  prompts = [list(TOKENS[0, :9]), list(TOKENS[1, :9])]
  m, params, config, _ = loading.load_params(workdir)
  ours = decode.generate(
    loading.with_params(config.objective, m, params),
    m,
    prompts,
    decode.Sampling(max_new_tokens=12),
  )
  with torch.no_grad():
    ids = torch.tensor(prompts)
    theirs = model.generate(
      ids,
      attention_mask=torch.ones_like(ids),
      max_new_tokens=12,
      do_sample=False,
      eos_token_id=None,
      pad_token_id=0,
    )
  assert ours == theirs[:, 9:].tolist()
