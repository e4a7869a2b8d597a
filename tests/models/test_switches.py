"""The modern architecture switches (config.model): QK-norm, ReLU², logit soft-capping,
zero-initialised output projections and z-loss; what each does, that old checkpoints stay
compatible with the ones that change no shapes, and that HF export refuses what it can't hold."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import bert
from models import decoder, encoder, model_config
from models.hf import decoder as hf_decoder
from models.hf import encoder as hf_encoder
from pretrain.objectives import pretraining
from pretrain.state import checkpointer, compatibility
from pretrain.training import trainer
from tests.helpers import COMPILES
from tests.models.test_decoder import _cfg, _tokens

RECIPES = dict(qk_norm=True, mlp="relu2", logit_softcap=15.0, zero_init_proj=True, z_loss=1e-4)


def _with_params_of(source, cfg):
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(1))
  nnx.update(model, nnx.state(source, nnx.Param))
  return model


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
  cfg = _cfg(qk_norm=True, use_bias=False, norm_eps=1e-9)
  model = decoder.Decoder(cfg, rngs=nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  assert params["blocks"]["attn"]["q_norm"]["scale"].shape == (2, 8)  # layers x head_dim
  assert tuple(nnx.get_partition_spec(params)["blocks"]["attn"]["k_norm"]["scale"].value) == (
    "layers",
    "head_dim",
  )
  before = model(_tokens())
  for proj in (model.blocks.attn.query, model.blocks.attn.key):
    proj.kernel[...] = proj.kernel[...] * 30.0
  np.testing.assert_allclose(model(_tokens()), before, atol=2e-5)
  plain = decoder.Decoder(_cfg(use_bias=False), rngs=nnx.Rngs(0))  # without the norm
  plain_before = plain(_tokens())
  for proj in (plain.blocks.attn.query, plain.blocks.attn.key):
    proj.kernel[...] = proj.kernel[...] * 30.0
  assert not np.allclose(plain(_tokens()), plain_before, atol=1e-2)


def test_relu2_is_the_square_of_relu_with_gelus_shapes():
  gelu = decoder.Decoder(_cfg(), rngs=nnx.Rngs(0))
  relu2 = _with_params_of(gelu, _cfg(mlp="relu2"))  # same parameter tree: no error
  mlp = relu2.blocks.mlp
  x = jax.random.normal(jax.random.key(2), (2, 5, 32))
  k = lambda m, name: getattr(m, name).kernel[...][0]
  b = lambda m, name: getattr(m, name).bias[...][0]
  want = jnp.maximum(x @ k(mlp, "fc") + b(mlp, "fc"), 0) ** 2 @ k(mlp, "proj") + b(mlp, "proj")
  got = nnx.vmap(lambda m, x: m(x), in_axes=(0, None))(mlp, x)[0]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert not np.allclose(relu2(_tokens()), gelu(_tokens()))


def test_soft_cap_bounds_the_logits_by_tanh():
  plain = decoder.Decoder(_cfg(), rngs=nnx.Rngs(0))
  plain.embed.embedding[...] = plain.embed.embedding[...] * 30.0  # large logits
  capped = _with_params_of(plain, _cfg(logit_softcap=5.0))
  raw, out = plain(_tokens()), capped(_tokens())
  assert float(jnp.abs(raw).max()) > 5.0
  assert float(jnp.abs(out).max()) <= 5.0
  np.testing.assert_allclose(out, 5.0 * np.tanh(np.asarray(raw) / 5.0), rtol=1e-5, atol=1e-5)


def test_zero_init_projections_start_every_block_as_the_identity():
  model = decoder.Decoder(_cfg(zero_init_proj=True), rngs=nnx.Rngs(0))
  assert not np.any(model.blocks.attn.out.kernel[...])
  assert not np.any(model.blocks.mlp.proj.kernel[...])
  assert np.std(model.blocks.mlp.fc.kernel[...]) == pytest.approx(0.02, rel=0.1)
  tokens = _tokens()
  x = model.embed(tokens) + model.pos_embed(jnp.broadcast_to(jnp.arange(16), tokens.shape))
  np.testing.assert_allclose(model(tokens), model.logits(x), atol=1e-5)
  # ... and they still learn: the gradient reaches them
  graphdef, params = nnx.split(model, nnx.Param)
  grads = jax.grad(lambda p: jnp.mean(nnx.merge(graphdef, p)(tokens) ** 2))(params)
  assert np.any(grads["blocks"]["mlp"]["proj"]["kernel"])


def test_z_loss_adds_the_mean_squared_log_partition_to_the_training_loss_only():
  tokens = _tokens(t=17)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  den = pretraining.causal_lm_denominators(batch)
  plain = decoder.Decoder(_cfg(), rngs=nnx.Rngs(0))
  z = _with_params_of(plain, _cfg(z_loss=0.01))
  loss, sums = pretraining.causal_lm_loss(plain, batch, None, den)
  z_total, z_sums = pretraining.causal_lm_loss(z, batch, None, den)
  lse = jax.nn.logsumexp(plain(batch["inputs"]).astype(jnp.float32), axis=-1)
  np.testing.assert_allclose(z_total, loss + 0.01 * jnp.mean(lse**2), rtol=1e-6)
  summary = pretraining.causal_lm_summarize(jax.tree.map(float, dict(z_sums, **den)))
  assert summary["loss"] == pytest.approx(float(loss), rel=1e-6)  # reported: cross-entropy
  assert summary["z_loss"] == pytest.approx(float(jnp.mean(lse**2)), rel=1e-5)


@pytest.mark.slow
def test_encoder_takes_the_switches():
  model_cfg = bert.get_config("smoke").model
  model_cfg.update(num_layers=2, num_heads=2, d_model=32, max_len=16, dropout=0.0, **RECIPES)
  cfg = model_config.resolve(model_cfg, 100)
  model = encoder.Encoder(cfg, rngs=nnx.Rngs(0))
  assert not np.any(model.blocks.attn.out.kernel[...])
  batch = {
    "inputs": _tokens(),
    "type_ids": jnp.zeros((2, 16), jnp.int32),
    "input_mask": jnp.ones((2, 16), jnp.int32),
    "masked_positions": jnp.array([[1, 3], [2, 5]]),
    "masked_ids": jnp.array([[4, 5], [6, 7]]),
    "masked_weights": jnp.ones((2, 2)),
    "example_weights": jnp.ones(2),
    "nsp_labels": jnp.array([0, 1]),
  }
  graphdef, params = nnx.split(model, nnx.Param)
  den = pretraining.mlm_denominators(batch)
  loss_fn = lambda p: pretraining.mlm_loss(nnx.merge(graphdef, p), batch, None, den)
  (loss, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  assert np.isfinite(loss) and "z_sum" in sums
  assert grads["blocks"]["attn"]["q_norm"]["scale"].shape == (2, 16)
  assert np.any(grads["blocks"]["attn"]["out"]["kernel"])
  logits = model.mlm_logits(model(batch["inputs"]), batch["masked_positions"])
  assert float(jnp.abs(logits).max()) <= 15.0


def test_checkpoints_stay_compatible_with_the_switches_that_change_no_shapes():
  saved = _cfg().to_dict()
  for field in ("qk_norm", "logit_softcap", "zero_init_proj", "z_loss"):
    saved.pop(field)  # a checkpoint from before the switches existed
  compatibility.check_compatible(
    saved, _cfg(mlp="relu2", logit_softcap=30.0, zero_init_proj=True, z_loss=1e-4), "ckpt"
  )
  with pytest.raises(
    checkpointer.CheckpointError,
    match=r"^config.model.qk_norm: the checkpoint in ckpt has qk_norm=False but "
    r"the config has True; match the checkpoint's model or use a fresh",
  ):
    compatibility.check_compatible(saved, _cfg(qk_norm=True), "ckpt")
  with pytest.raises(checkpointer.CheckpointError, match="config.model.mlp: .*'gelu'.*'swiglu'"):
    compatibility.check_compatible(saved, _cfg(mlp="swiglu"), "ckpt")


@pytest.mark.parametrize(
  "field,value", [("qk_norm", True), ("logit_softcap", 30.0), ("mlp", "relu2")]
)
def test_hugging_face_export_refuses_what_it_cannot_hold(field, value):
  with pytest.raises(hf_decoder.ConvertError, match=f"^config.model.{field}: "):
    hf_decoder.hf_type(_cfg(**{field: value}))
  with pytest.raises(hf_decoder.ConvertError, match=f"^config.model.{field}: "):
    hf_decoder.hf_type(
      _cfg(position="rope", norm="rmsnorm", mlp="swiglu", use_bias=False, **{field: value})
      if field != "mlp"
      else _cfg(position="rope", norm="rmsnorm", mlp="relu2", use_bias=False)
    )
  model = dataclasses.replace(
    model_config.resolve(bert.get_config("smoke").model, 100), **{field: value}
  )
  with pytest.raises(hf_encoder.ConvertError, match=f"^config.model.{field}: "):
    hf_encoder.hf_type(model)
  # the training-only switches export
  assert hf_decoder.hf_type(_cfg(zero_init_proj=True, z_loss=1e-4)) == "gpt2"


def test_a_run_resumes_with_the_switches_that_change_no_shapes(tiny_config, tmp_path):
  """Trained 3 steps as GPT-2; resumed to 6 with ReLU², soft-capping, z-loss and zero-init
  (which only changes a fresh init); qk_norm adds parameters and is refused before compiling."""
  trainer.train_and_evaluate(
    tiny_config(**{"train.total_steps": 3}), str(tmp_path), devices=jax.devices()[:1]
  )
  switched = {f"model.{k}": v for k, v in RECIPES.items() if k != "qk_norm"}
  result = trainer.train_and_evaluate(
    tiny_config(**switched, **{"train.total_steps": 6}), str(tmp_path), devices=jax.devices()[:1]
  )
  assert result.step == 6 and np.isfinite(result.metrics["loss"])
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("train/z_loss" in r for r in rows)
  compiles = len(COMPILES)
  with pytest.raises(checkpointer.CheckpointError, match="^config.model.qk_norm: the checkpoint"):
    trainer.train_and_evaluate(
      tiny_config(**{"model.qk_norm": True, "train.total_steps": 9}),
      str(tmp_path),
      devices=jax.devices()[:1],
    )
  assert len(COMPILES) == compiles
