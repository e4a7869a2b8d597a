"""Hugging Face BERT / RoBERTa <-> our encoder runs: same outputs, lossless round trips."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp
from safetensors.numpy import load_file

from pretrain import convert
from pretrain.ground import errors
from pretrain.state import hf_conversion
from tests.helpers import randomise_hf

VOCAB = 300
TEXT = (
  "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
  "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. "
) * 20
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
SMALL = dict(
  num_hidden_layers=2,
  hidden_size=64,
  num_attention_heads=4,
  intermediate_size=128,
  vocab_size=VOCAB,
)
B, T, PAD_FROM = 2, 16, 12  # row 1 is padding from PAD_FROM on
POSITIONS = np.array([[0, 3, 7, 15], [1, 2, 5, 11]])  # masked-LM positions (not padding)


def _bert_tok():
  from input_pipeline import tokenizer

  return tokenizer._train_wordpiece([TEXT], VOCAB, True)


def _roberta_tok():
  import tokenizers
  from tokenizers import decoders, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(tokenizers.models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(
    [TEXT],
    trainers.BpeTrainer(
      vocab_size=VOCAB,
      special_tokens=ROBERTA_SPECIALS,
      show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ),
  )
  assert [tok.token_to_id(t) for t in ROBERTA_SPECIALS] == [0, 1, 2, 3, 4]
  return tok


def _hf_model(path, arch, seed=0):
  if arch.startswith("Roberta"):
    cfg, tok = (
      transformers.RobertaConfig(
        **SMALL,
        max_position_embeddings=66,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
      ),
      _roberta_tok(),
    )
  else:
    cfg, tok = transformers.BertConfig(**SMALL, max_position_embeddings=64), _bert_tok()
  model = randomise_hf(getattr(transformers, arch)(cfg), seed).eval()
  model.save_pretrained(path)
  tok.save(str(path / "tokenizer.json"))
  return model


def _inputs(kind):
  """(tokens, type ids, input mask): row 1 padded at the end (RoBERTa: with <pad>)."""
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, VOCAB, (B, T))
  types = np.zeros((B, T), np.int64)
  if kind == "bert":
    types[:, T // 2 :] = 1
  mask = np.ones((B, T), np.int64)
  mask[1, PAD_FROM:] = 0
  if kind == "roberta":
    tokens[1, PAD_FROM:] = 1
  return tokens, types, mask


def _hf_outputs(model, kind):
  tokens, types, mask = _inputs(kind)
  kw = dict(attention_mask=torch.tensor(mask), output_hidden_states=True)
  if kind == "bert":
    kw["token_type_ids"] = torch.tensor(types)
  with torch.no_grad():
    out = model(torch.tensor(tokens), **kw)
  logits = getattr(out, "prediction_logits", None)
  if logits is None:
    logits = getattr(out, "logits", None)
  rows = np.arange(B)[:, None]
  return dict(
    hidden=out.hidden_states[-1].numpy() if out.hidden_states else out.last_hidden_state.numpy(),
    mlm=None if logits is None or logits.ndim != 3 else logits.numpy()[rows, POSITIONS],
    nsp=(out.seq_relationship_logits.numpy() if hasattr(out, "seq_relationship_logits") else None),
  )


def _our_outputs(workdir, kind):
  tokens, types, mask = _inputs(kind)
  model = hf_conversion.load_model(workdir)
  hidden = model(jnp.asarray(tokens), type_ids=jnp.asarray(types), input_mask=jnp.asarray(mask))
  out = dict(
    hidden=np.asarray(hidden), mlm=np.asarray(model.mlm_logits(hidden, jnp.asarray(POSITIONS)))
  )
  out["nsp"] = np.asarray(model.nsp_logits(model.pooled(hidden))) if model.nsp is not None else None
  return out


def _compare(ours, theirs, kind):
  """Hidden states (RoBERTa: at non-pad positions, whose HF position ids we share) and heads."""
  keep = np.ones((B, T), bool) if kind == "bert" else _inputs(kind)[2].astype(bool)
  np.testing.assert_allclose(ours["hidden"][keep], theirs["hidden"][keep], atol=1e-4, rtol=0)
  for name in ("mlm", "nsp"):
    if theirs[name] is not None:
      np.testing.assert_allclose(ours[name], theirs[name], atol=1e-4, rtol=0, err_msg=name)


ARCHS = {"bert": "BertForPreTraining", "roberta": "RobertaForMaskedLM"}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def imported(request, tmp_path_factory):
  """(kind, HF model, its root, our workdir imported from it)."""
  kind = request.param
  root = tmp_path_factory.mktemp(kind)
  model = _hf_model(root / "hf", ARCHS[kind])
  convert.from_hf(str(root / "hf"), str(root / "run"))
  return kind, model, root, str(root / "run")


def test_import_matches_hf(imported):
  kind, model, _, workdir = imported
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  m = saved["resolved_model"]
  assert (m["vocab_size"], m["max_len"], m["d_ff"], m["size"]) == (VOCAB, 64, 128, kind)
  assert not m["gelu_approximate"] and not m["pre_norm"] and m["norm_eps"] == 1e-12
  assert m["type_vocab_size"] == (2 if kind == "bert" else 1)
  assert m["nsp_head"] == (kind == "bert")
  assert saved["objective"] == ("mlm_nsp" if kind == "bert" else "mlm")
  assert saved["data"]["tokenizer"] == dict(
    saved["data"]["tokenizer"],
    kind="file",
    path=os.path.join(workdir, "tokenizer.json"),
    eos_token="[SEP]" if kind == "bert" else "</s>",
  )
  ours, theirs = _our_outputs(workdir, kind), _hf_outputs(model, kind)
  assert theirs["mlm"] is not None and (theirs["nsp"] is not None) == (kind == "bert")
  _compare(ours, theirs, kind)


def test_workdir_passes_the_run_checks(imported):
  import tokenizers

  from input_pipeline import tokenizer
  from pretrain.state import run_files
  from pretrain.training import config_checks

  kind, _, _, workdir = imported
  config = run_files.run_config(workdir)
  tok = tokenizers.Tokenizer.from_file(config.data.tokenizer.path)
  config_checks.check(config, 1)
  ids = tokenizer.check_bert_specials(tok)  # RoBERTa: <s> </s> <mask> in BERT's roles
  assert (ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]) == ((2, 3, 4) if kind == "bert" else (0, 2, 4))


def test_workdir_evaluates_on_a_corpus(imported, data_dir, sentence_corpus):
  """An import runs through the masked-LM pipeline: BERT's NSP pairs, RoBERTa's full
  sentences (<s> ... </s> in the roles of [CLS] ... [SEP])."""
  from pretrain import evaluate
  from pretrain.state import run_files

  _, _, _, workdir = imported
  config = run_files.run_config(workdir)
  config.data.update(data_dir=data_dir, files=sentence_corpus, doc_split="blank_line")
  config.batch.update(size=8, seq_len=32)
  results = evaluate.evaluate_run(config, workdir, evaluate.Options(max_batches=1))
  assert 0 < results[0]["mlm_loss"] < 20 and 0 <= results[0]["mlm_accuracy"] <= 1


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix: np.asarray(tree)}
  return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}


def test_export_loads_in_transformers_and_round_trips(imported):
  kind, _, root, workdir = imported
  out = root / "export"
  hf_conversion.export_hf(workdir, str(out))
  with open(out / "config.json") as f:
    assert json.load(f)["architectures"] == [ARCHS[kind]]
  loaded, info = getattr(transformers, ARCHS[kind]).from_pretrained(
    str(out), output_loading_info=True
  )
  for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    assert not info.get(key), (key, info[key])
  _compare(_our_outputs(workdir, kind), _hf_outputs(loaded.eval(), kind), kind)
  original, exported = (
    load_file(str(root / "hf" / "model.safetensors")),
    load_file(str(out / "model.safetensors")),
  )
  for name, value in exported.items():
    if name.endswith("position_embeddings.weight") and kind == "roberta":
      value, original[name] = value[2:], original[name][2:]  # rows before position 0
    np.testing.assert_array_equal(value, original[name], err_msg=name)
  convert.from_hf(str(out), str(root / "again"))
  a, b = (
    _flatten(hf_conversion.load_params(workdir)[1]),
    _flatten(hf_conversion.load_params(str(root / "again"))[1]),
  )
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
  "arch,note",
  [("BertModel", "initialised fresh (not in the file): mlm, nsp"), ("BertForMaskedLM", None)],
)
@pytest.mark.slow
def test_other_bert_classes(arch, note, tmp_path, capsys):
  model = _hf_model(tmp_path / "hf", arch, seed=1)
  tok = None
  if arch == "BertModel":  # a vocab.txt in place of tokenizer.json
    tok = _bert_tok()
    (tmp_path / "hf" / "tokenizer.json").unlink()
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    (tmp_path / "hf" / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab))
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
  convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "run"), scan_layers=False)
  printed = capsys.readouterr().out.strip()
  if note:
    assert note in printed and "\n" not in printed
  else:
    assert "initialised fresh (not in the file): pooler" in printed
  theirs = _hf_outputs(model, "bert")
  _compare(_our_outputs(str(tmp_path / "run"), "bert"), theirs, "bert")
  with open(tmp_path / "run" / "config.json") as f:
    saved = json.load(f)
  assert saved["objective"] == ("mlm" if arch == "BertForMaskedLM" else "mlm_nsp")
  if arch == "BertModel":
    import tokenizers

    text = "The Quick brown fox, judge my vow!"
    ours = tokenizers.Tokenizer.from_file(str(tmp_path / "run" / "tokenizer.json"))
    assert ours.encode(text).ids == tok.encode(text).ids
  if arch == "BertForMaskedLM":
    hf_conversion.export_hf(str(tmp_path / "run"), str(tmp_path / "export"))
    _, info = transformers.BertForMaskedLM.from_pretrained(
      str(tmp_path / "export"), output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]


def _classifier_logits(model):
  tokens, types, mask = _inputs("bert")
  with torch.no_grad():
    return model(
      torch.tensor(tokens), token_type_ids=torch.tensor(types), attention_mask=torch.tensor(mask)
    ).logits.numpy()


def test_sequence_classification_both_ways(tmp_path):
  """BertForSequenceClassification: the encoder, pooler and classifier import into a
  fine-tuning run (objective 'classification') with HF's logits, and export back whole."""
  cfg = transformers.BertConfig(**SMALL, max_position_embeddings=64, num_labels=3)
  model = randomise_hf(transformers.BertForSequenceClassification(cfg), 2).eval()
  model.save_pretrained(tmp_path / "hf")
  _bert_tok().save(str(tmp_path / "hf" / "tokenizer.json"))
  convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  with open(tmp_path / "run" / "config.json") as f:
    saved = json.load(f)
  assert saved["objective"] == "classification" and saved["model"]["num_labels"] == 3
  assert saved["data"]["task"] == "mnli"  # the GLUE task with three labels
  tokens, types, mask = _inputs("bert")
  ours = hf_conversion.load_model(str(tmp_path / "run"))
  logits = ours.logits(
    ours(jnp.asarray(tokens), type_ids=jnp.asarray(types), input_mask=jnp.asarray(mask))
  )
  np.testing.assert_allclose(np.asarray(logits), _classifier_logits(model), atol=1e-4, rtol=0)
  hf_conversion.export_hf(str(tmp_path / "run"), str(tmp_path / "export"))
  loaded, info = transformers.BertForSequenceClassification.from_pretrained(
    str(tmp_path / "export"), output_loading_info=True
  )
  for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    assert not info.get(key), (key, info[key])
  assert loaded.config.num_labels == 3
  np.testing.assert_allclose(
    _classifier_logits(loaded.eval()), _classifier_logits(model), atol=1e-5, rtol=0
  )
  original = load_file(str(tmp_path / "hf" / "model.safetensors"))
  for name, value in load_file(str(tmp_path / "export" / "model.safetensors")).items():
    np.testing.assert_array_equal(value, original[name], err_msg=name)


@pytest.mark.parametrize(
  "field,value",
  [
    ("position_embedding_type", "relative_key"),
    ("hidden_act", "relu"),
    ("is_decoder", True),
    ("add_cross_attention", True),
  ],
)
def test_refusals_write_nothing(field, value, tmp_path):
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps(dict(model_type="bert", **{field: value})))
  run = tmp_path / "run"
  with pytest.raises(errors.UserError, match=field) as e:
    convert.from_hf(str(hf), str(run))
  assert "\n" not in str(e.value)
  assert not run.exists()
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_unknown_model_type_lists_every_supported_one(tmp_path):
  hf = tmp_path / "hf"
  hf.mkdir()
  (hf / "config.json").write_text(json.dumps(dict(model_type="t5")))
  with pytest.raises(errors.UserError, match="gpt2, llama, bert, roberta") as e:
    convert.from_hf(str(hf), str(tmp_path / "run"))
  assert "\n" not in str(e.value) and not (tmp_path / "run").exists()
