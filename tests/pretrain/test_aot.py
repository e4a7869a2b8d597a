"""Ahead-of-time check: compile for a mesh of fake devices without running anything."""

import jax
import pytest

from configs import bert, common, gpt
from models import encoder, model_config
from pretrain.devices import sharding
from pretrain.objectives import registry
from pretrain.planning import compile_check
from pretrain.training import metrics
from tests.helpers import REPO


def test_gpt2_xl_fsdp8_holds_an_eighth_of_the_state_per_device():
  config = gpt.get_config("xl")
  config.mesh.update(data=1, fsdp=8, tensor=1)
  config.batch.update(size=8)
  r = compile_check.analyse(config)
  assert r["params"] / 1e9 == pytest.approx(1.556, abs=0.001)
  assert r["state_bytes_total"] == pytest.approx(3 * 4 * 1.5576e9, rel=0.01)  # params + 2 moments
  assert r["state_bytes_per_device"] <= r["state_bytes_total"] / 8 * 1.05
  assert r["argument_bytes"] >= r["state_bytes_per_device"]
  assert r["temp_bytes"] > 0 and r["formula_flops_per_step"] > 0
  assert "fits" in compile_check.report(r, 80e9) and "does NOT fit" in compile_check.report(r, 1e9)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["bert", "roberta"])
def test_masked_lm_fsdp8(recipe):
  """BERT (MLM + NSP) and RoBERTa (MLM) compile for fsdp=8; parameters, state and FLOPs are
  the encoder's."""
  config = bert.get_config(f"tiny,recipe={recipe}")
  config.mesh.update(data=1, fsdp=8, tensor=1)
  config.batch.update(size=8, seq_len=128)
  r = compile_check.analyse(config)
  assert r["devices"] == 8 and (r["mesh"]["data"], r["mesh"]["fsdp"]) == (1, 8)
  cfg = model_config.resolve(config.model, config.data.tokenizer.vocab_size)
  v, d, n_layers, types = cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.type_vocab_size
  assert (v, d, n_layers) == (30592, 128, 2)  # 30522 rounded up to a multiple of 128
  nsp = recipe == "bert"
  assert config.objective == ("mlm_nsp" if nsp else "mlm")
  # token and type tables, embedding LayerNorm, blocks (4 d^2 attention + 8 d^2 MLP, 13 d
  # biases and norms), pooler, MLM dense + LayerNorm + output bias, NSP classifier
  by_hand = (
    v * d
    + types * d
    + 2 * d
    + n_layers * (12 * d * d + 13 * d)
    + 2 * (d * d + d)
    + 2 * d
    + v
    + (2 * d + 2 if nsp else 0)
  )
  assert r["params"] == by_hand == encoder.count_params(cfg)
  # params + two Adam moments in float32, the position table included
  total = 3 * 4 * (by_hand + cfg.max_len * d)
  assert r["state_bytes_total"] == pytest.approx(total, rel=0.001)
  # fsdp splits the model width 8 ways. The MLM output bias (vocab axis, on 'tensor' = 1)
  # stays whole, ~5% of a device's share at this width; the rest is split 8 ways, up to the
  # other biases without a model-width axis (<0.5%).
  whole = 3 * 4 * v
  per_device = r["state_bytes_per_device"]
  assert total / 8 <= per_device and (per_device - whole) * 8 == pytest.approx(
    total - whole, rel=0.01
  )
  seq, p = config.batch.seq_len, config.data.mlm.max_predictions
  per_token = metrics.mlm_flops_per_token(cfg, by_hand, seq, p)
  assert per_token == registry.get(config.objective).flops_per_token(cfg, by_hand, config)
  assert r["formula_flops_per_step"] == pytest.approx(per_token * 8 * seq, rel=1e-12)


@pytest.mark.slow
def test_fsdp_keeps_activations_batch_sharded():
  # Without activation constraints XLA kept activations sharded like the weights and the
  # batch whole: FSDP then needed ~6x the temporaries of data parallelism.
  def temps(**mesh):
    config = gpt.get_config("small")
    config.mesh.update(mesh)
    config.batch.update(size=16, seq_len=256)
    return compile_check.analyse(config)["temp_bytes"]

  assert temps(data=1, fsdp=8, tensor=1) <= 1.1 * temps(data=8, fsdp=1, tensor=1)


def test_mesh_errors_are_reported():
  config = gpt.get_config("smoke")
  config.mesh.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(sharding.MeshError, match="config.mesh"):
    compile_check.analyse(config)


@pytest.mark.slow
def test_command_line_on_fake_devices(entry_point):
  cmd = [
    "pretrain.aot",
    "--config=configs/gpt.py:medium",
    "--devices=4",
    "--config.mesh.fsdp=4",
    "--config.mesh.data=1",
    "--config.batch.size=4",
  ]
  ok = entry_point(*cmd, "--memory_per_device=80e9")
  assert ok.returncode == 0, ok.stderr
  assert "on 4 devices" in ok.stdout and "fits in" in ok.stdout
  tight = entry_point(*cmd, "--memory_per_device=1e8", "--nosearch")
  assert tight.returncode == 3 and "does NOT fit" in tight.stdout
  assert "XLA" not in tight.stdout and "per device (the MFU formula" in tight.stdout
  assert len(jax.devices()) == 8  # this process's devices were not touched


@pytest.mark.slow
def test_search_finds_the_cheapest_change_that_fits():
  """Changes are tried cumulatively, cheapest first; the first that fits is reported."""
  config = gpt.get_config("small")
  config.model.num_layers = 2
  config.mesh.update(data=4, fsdp=2)
  config.batch.update(size=16, seq_len=256)
  baseline = compile_check.analyse(config)["peak_bytes"]
  limit = 0.62 * baseline  # met from the remat rung on (between it and the rung before)
  overrides, found = compile_check.search(config, limit)
  assert found["peak_bytes"] <= limit < baseline
  steps = compile_check.ladder(config)
  assert list(overrides.items()) == steps[: len(overrides)], overrides
  assert overrides["model.dtype"] == "bfloat16" and len(overrides) < len(steps)
  # one step fewer did not fit (the ladder stops at the first fit)
  fewer = dict(steps[: len(overrides) - 1])
  if "mesh.fsdp" in fewer and "mesh.data" not in fewer:
    fewer.pop("mesh.fsdp")
  smaller = common.apply_overrides(
    gpt.get_config("small"),
    {
      "model.num_layers": 2,
      "mesh.data": 4,
      "mesh.fsdp": 2,
      "batch.size": 16,
      "batch.seq_len": 256,
      **fewer,
    },
  )
  assert compile_check.analyse(smaller)["peak_bytes"] > limit
  # Nothing fits: the whole ladder is tried (counted, not compiled: the rungs compile above).
  tried = []
  assert compile_check.search(config, 1e6, lambda c: tried.append(c) or {"peak_bytes": 2e6}) == (
    None,
    {"peak_bytes": 2e6},
  )
  assert tried[-1].model.remat == "full" and len(tried) >= len(steps) - 2


def test_the_readme_example_fits():
  """The command the README shows fits what it says (parsed from the README itself)."""
  import re

  readme = (REPO / "README.md").read_text()
  command = re.search(r"```bash\npython -m pretrain\.aot (.*?)\n```", readme, re.S).group(1)
  args = command.replace("\\\n", " ").split()
  config = gpt.get_config(next(a for a in args if a.startswith("--config=")).split(":")[1])
  overrides = dict(a[len("--config.") :].split("=", 1) for a in args if a.startswith("--config."))
  for key, value in overrides.items():
    current = config
    for part in key.split(".")[:-1]:
      current = current[part]
    common.apply_overrides(config, {key: type(current[key.split(".")[-1]])(value)})
  limit = float(next(a for a in args if a.startswith("--memory_per_device=")).split("=")[1])
  assert "--devices=8" in args and len(jax.devices()) == 8
  assert compile_check.analyse(config)["peak_bytes"] <= limit
