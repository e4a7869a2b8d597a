"""The typed model config: resolution, defaults, and the checkpoints written before a field."""

import dataclasses

import pytest

from configs import bert, gpt
from models import model_config
from pretrain.ground import errors
from pretrain.state import checkpointer, compatibility


def test_resolve_fills_the_derived_fields_and_is_frozen():
  cfg = model_config.resolve(gpt.get_config("smoke").model, 300)
  assert isinstance(cfg, model_config.ModelConfig)
  assert (cfg.vocab_size, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff) == (384, 4, 16, 256)
  swiglu = gpt.get_config("smoke").model
  swiglu.mlp = "swiglu"
  assert model_config.resolve(swiglu, 300).d_ff == 192  # 8/3 * 64 rounded up to 64
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.d_model = 128


def test_each_family_records_its_own_fields():
  decoder = model_config.resolve(gpt.get_config("smoke").model, 100)
  encoder = model_config.resolve(bert.get_config("smoke").model, 100)
  assert not decoder.is_encoder and encoder.is_encoder
  assert "type_vocab_size" not in decoder.to_dict()
  assert encoder.to_dict()["type_vocab_size"] == 2 and encoder.to_dict()["num_labels"] == 0
  assert (encoder.pre_norm, encoder.norm_eps, encoder.dropout) == (False, 1e-12, 0.1)
  # what a checkpoint records reads back as the same config
  for cfg in (decoder, encoder):
    assert model_config.resolve(cfg.to_dict(), 0) == cfg


def test_a_checkpoint_written_before_a_field_reads_as_its_default():
  cfg = model_config.resolve(gpt.get_config("smoke").model, 100)
  newer = ("qk_norm", "logit_softcap", "zero_init_proj", "z_loss", "scan_unroll", "size")
  old = {k: v for k, v in cfg.to_dict().items() if k not in newer}
  assert model_config.resolve(old, 0) == dataclasses.replace(cfg, size="")
  compatibility.check_compatible(old, cfg, "an old run")  # no error
  with pytest.raises(checkpointer.CheckpointError, match="^config.model.qk_norm: "):
    compatibility.check_compatible(old, dataclasses.replace(cfg, qk_norm=True), "an old run")


def test_unknown_or_missing_fields_are_named():
  fields = dict(model_config.resolve(gpt.get_config("smoke").model, 100).to_dict())
  with pytest.raises(errors.UserError, match=r"^config.model.qk_nrom: not a model field"):
    model_config.resolve(dict(fields, qk_nrom=True), 0)
  del fields["d_model"]
  with pytest.raises(errors.UserError, match=r"^config.model.d_model: required"):
    model_config.resolve(fields, 0)
  with pytest.raises(ValueError, match="qk_nrom"):
    model_config.defaults(qk_nrom=True)
