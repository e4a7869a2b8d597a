"""Hugging Face ModernBERT <-> our encoder runs: the same logits (padding, sequences longer
than the local window), lossless round trips, and an imported model that fine-tunes."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp
from safetensors.numpy import load_file

from input_pipeline import tokenizer
from pretrain import convert
from pretrain.ground import errors
from pretrain.state import hf_conversion
from tests.helpers import randomise_hf, write_sst

VOCAB = 300
TEXT = "The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs. " * 20
SMALL = dict(
  vocab_size=VOCAB,
  hidden_size=64,
  num_hidden_layers=4,  # global, local, local, global
  num_attention_heads=4,
  intermediate_size=96,
  max_position_embeddings=64,
  local_attention=8,  # +-4: rows of 24 tokens cross it many times
  global_attn_every_n_layers=3,
  global_rope_theta=1000.0,
  local_rope_theta=100.0,
  pad_token_id=0,
  cls_token_id=2,
  sep_token_id=3,
  bos_token_id=2,
  eos_token_id=3,
)
T, PAD_FROM = 24, 17  # row 1 is padding from PAD_FROM on


def _hf_dir(path, arch="ModernBertForMaskedLM", seed=0):
  cfg = transformers.ModernBertConfig(**SMALL, attn_implementation="eager")
  model = randomise_hf(getattr(transformers, arch)(cfg), seed).eval()
  model.save_pretrained(path)
  tokenizer._train_wordpiece([TEXT], VOCAB, True).save(str(path / "tokenizer.json"))
  return model


def _inputs():
  ids = np.random.default_rng(0).integers(5, VOCAB, (2, T))
  mask = np.ones((2, T), np.int64)
  mask[1, PAD_FROM:] = 0
  return ids, mask


def _hf_logits(model):
  ids, mask = _inputs()
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def _our_logits(workdir):
  model = hf_conversion.load_model(str(workdir))
  ids, mask = _inputs()
  hidden = model(jnp.asarray(ids, jnp.int32), input_mask=jnp.asarray(mask, jnp.int32))
  return np.asarray(model.mlm_logits(hidden, jnp.broadcast_to(jnp.arange(T), (2, T))))


def _close(ours, theirs):
  np.testing.assert_allclose(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(ours[1, :PAD_FROM], theirs[1, :PAD_FROM], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("modernbert")
  model = _hf_dir(root / "hf")
  convert.from_hf(str(root / "hf"), str(root / "run"))
  return root, model


def test_import_matches_hf(imported):
  root, model = imported
  _close(_our_logits(root / "run"), _hf_logits(model))
  config = json.loads((root / "run" / "config.json").read_text())
  assert config["model"]["attention_window"] == 8 and config["model"]["global_every"] == 3
  assert (config["model"]["rope_theta"], config["model"]["rope_theta_local"]) == (1000.0, 100.0)
  assert config["objective"] == "mlm" and config["model"]["first_block_norm"] is False


def test_export_loads_in_transformers_and_round_trips(imported, tmp_path):
  root, model = imported
  convert.run("to_hf", str(tmp_path / "hf"), str(root / "run"))
  reloaded = transformers.ModernBertForMaskedLM.from_pretrained(
    tmp_path / "hf", attn_implementation="eager"
  ).eval()
  _close(_hf_logits(reloaded), _hf_logits(model))
  original = load_file(root / "hf" / "model.safetensors")
  exported = load_file(tmp_path / "hf" / "model.safetensors")
  for name, array in exported.items():
    assert np.array_equal(array, original[name]), name  # bitwise
  assert set(original) - set(exported) <= {"decoder.weight"}  # tied to the embedding
  convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "again"))
  np.testing.assert_array_equal(_our_logits(tmp_path / "again"), _our_logits(root / "run"))


def test_a_bare_model_imports_with_a_fresh_head(tmp_path, capsys):
  _hf_dir(tmp_path / "hf", "ModernBertModel")
  convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert "initialised fresh (not in the file): mlm" in capsys.readouterr().out


def test_a_biased_modernbert_is_refused_and_nothing_written(tmp_path):
  _hf_dir(tmp_path / "hf")
  path = tmp_path / "hf" / "config.json"
  path.write_text(json.dumps(dict(json.loads(path.read_text()), mlp_bias=True)))
  with pytest.raises(errors.UserError, match="mlp_bias=True is not supported") as e:
    convert.from_hf(str(tmp_path / "hf"), str(tmp_path / "run"))
  assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "run")


@pytest.mark.slow
def test_an_imported_modernbert_fine_tunes_on_glue(imported, data_dir, tmp_path):
  """configs/finetune/glue.py:sst2 as it is, the model taken from the imported run."""
  from configs.finetune import glue
  from pretrain.training import trainer

  root, _ = imported
  config = glue.get_config("sst2")
  config.init_from = str(root / "run")
  files = write_sst(tmp_path / "train.tsv", 200, 0) + "," + write_sst(tmp_path / "dev.tsv", 60, 1)
  config.data.update(files=files, data_dir=data_dir)
  config.batch.update(size=16, seq_len=24)
  config.train.update(epochs=6, peak_flops=1e12)
  config.optimizer.lr = 3e-3
  config.checkpoint.async_save = False
  result = trainer.train_and_evaluate(config, str(tmp_path / "sst2"))
  assert result.step == 78  # 6 x ceil(200 / 16)
  assert result.metrics["eval_accuracy"] >= 0.7  # chance is 0.5 (3 sd above on 60 examples)
