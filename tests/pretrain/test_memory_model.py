"""The analytic memory model against the compiled step, on small shapes where they should agree."""

import dataclasses

import pytest

from configs import common, gpt
from models import model_config
from pretrain.planning import compile_check, memory_model

SHAPE = {
  "model.d_model": 128,
  "model.num_heads": 4,
  "model.num_layers": 4,
  "model.max_len": 128,
  "batch.size": 32,
  "batch.seq_len": 128,
  "mesh.data": 2,
  "mesh.fsdp": 4,
  "data.tokenizer.vocab_size": 512,
  "train.total_steps": 10,
}


@pytest.mark.slow
def test_the_model_agrees_with_the_compiled_step():
  """float32 with the matmul outputs kept: nothing that XLA:CPU plans unlike an accelerator
  (bfloat16, which it computes in float32, or whole-stack gathers under full remat)."""
  config = common.apply_overrides(gpt.get_config("smoke"), {**SHAPE, "model.remat": "dots"})
  r = compile_check.analyse(config)
  assert memory_model.disagreement(r["model"].peak, r["peak_bytes"]) < 0.25
  assert r["model"].state == r["state_bytes_per_device"]
  assert "analytic model per device: state" in compile_check.report(r, 0)


def _estimate(cfg, **kw):
  args = dict(state_bytes=0, n_params=10**6, mesh=dict(data=2, fsdp=4), batch_size=32)
  return memory_model.estimate(cfg, **(args | dict(seq_len=128) | kw))


def test_what_each_setting_keeps():
  cfg = model_config.resolve(common.apply_overrides(gpt.get_config("smoke"), SHAPE).model, 512)
  kept = {remat: _estimate(cfg, remat=remat).activations for remat in ("none", "dots", "full")}
  assert kept["none"] > kept["dots"] > kept["full"] > 0
  # the layer's input alone under full remat: layers x tokens per device x width x 4 bytes
  assert kept["full"] == 4 * (32 // 8) * 128 * 128 * 4
  bf16 = dataclasses.replace(cfg, dtype="bfloat16")
  assert _estimate(bf16, remat="full").activations == kept["full"] // 2
  assert _estimate(cfg, grad_accum=2).activations == kept["none"] // 2
  assert _estimate(cfg, grad_accum=2).gradients == 2 * _estimate(cfg).gradients
  tensor = _estimate(cfg, remat="dots", mesh=dict(fsdp=2, tensor=4))
  assert tensor.activations == kept["dots"]  # 4x the rows per device, a quarter of each
  assert memory_model.disagreement(75, 100) == 0.25
