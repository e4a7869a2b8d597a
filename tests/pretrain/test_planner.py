"""Plans for named targets: the chip table's names, the mesh chosen, a target too small refused,
and a scaled-down GPT-3 175B planned, compiled on 64 fake devices and checked against the model."""

import re

import pytest

from configs import common, gpt3
from pretrain.planning import compile_check, memory_model, planner, targets


def test_target_names():
  v5p = targets.parse("v5p-1024")  # v5p counts TensorCores, two per chip
  assert (v5p.chips, v5p.slices, v5p.chip.memory, v5p.name) == (512, 1, 95e9, "v5p-1024")
  multi = targets.parse("v5e-256x2")  # v5e counts chips
  assert (multi.chips_per_slice, multi.slices, multi.chips, multi.name) == (
    256,
    2,
    512,
    "v5e-256x2",
  )
  assert targets.parse("h100x256").chips == 256
  assert [t.name for t in targets.larger(targets.parse("v5p-2048"))] == [
    "v5p-4096",
    "v5p-8192",
    "v5p-16384",
  ]
  assert targets.fake_devices(["--config=x", "--target=h200x16"]) == 16
  assert targets.fake_devices(["--devices=8"]) == 8
  for bad, says in (
    ("v5p-1023", "2 core(s) per chip"),
    ("tpu-8", "not a target"),
    ("h100x0", "1 to"),
  ):
    with pytest.raises(targets.TargetError, match=re.escape(says)) as e:
      targets.parse(bad)
    assert "\n" not in str(e.value) and f"--target={bad}" in str(e.value)


@pytest.fixture(scope="module")
def gpt3_175b():
  config = gpt3.get_config("175b")
  return config, compile_check.count_params(config)


def test_maxtexts_v5p_layout_fits(gpt3_175b):
  """MaxText's published v5p-1024 layout for GPT-3 175B: fsdp 64 x tensor 8, 4 sequences per
  chip, full remat, bf16. The residual stream's width is split over the tensor ways between
  blocks, so each chip keeps 1/8 of the layers' inputs."""
  config, n = gpt3_175b
  config = common.apply_overrides(config.copy_and_resolve_references(), {"batch.size": 2048})
  fixed = {"mesh.fsdp", "mesh.tensor", "mesh.data", "model.remat", "batch.grad_accum"}
  config = planner.with_overrides(
    config,
    {"mesh.data": 1, "mesh.fsdp": 64, "mesh.tensor": 8, "model.remat": "full"}
    | {"batch.grad_accum": 1, "batch.warmup_steps": 0},
  )
  plan = planner.choose(config, targets.parse("v5p-1024"), fixed, n)
  assert plan is not None and plan.fits
  # the layers' inputs: 96 layers x 32 sequences per fsdp shard x 2048 x 12288 / 8 x 2 bytes
  assert plan.estimate.activations == 96 * 32 * 2048 * 12288 // 8 * 2
  assert plan.estimate.peak < 0.85 * 95e9


def test_a_target_too_small_is_refused_naming_the_smallest_that_fits(gpt3_175b):
  config, n = gpt3_175b
  small = targets.parse("v5p-16")
  assert planner.choose(config, small, set(), n) is None
  line = planner.refusal(config, small, set(), n)
  assert line.startswith("does NOT fit v5p-16:") and "\n" not in line
  smallest = re.search(r"the smallest v5p target that fits is (v5p-\d+)", line).group(1)
  found = planner.choose(config, targets.parse(smallest), set(), n)
  assert found is not None and found.fits
  half = targets.Target(small.chip, targets.parse(smallest).chips_per_slice // 2)
  assert planner.choose(config, half, set(), n) is None


def test_the_choice_and_the_time(gpt3_175b):
  config, n = gpt3_175b
  plan = planner.choose(config, targets.parse("v5p-1024x2"), set(), n)
  assert plan.overrides["mesh.data"] == plan.overrides["mesh.dcn.data"] == 2  # across slices
  assert plan.overrides["model.dtype"] == plan.overrides["optimizer.mu_dtype"] == "bfloat16"
  planned = planner.with_overrides(config, plan.overrides)
  time = planner.timing(planned, plan.target, 0.5)
  # 6 N D for 300B tokens, plus attention's share (12 L T d per token, a few percent at 175B)
  six_nd = 6 * 174.6e9 * 300e9
  chip_seconds = time.steps * time.step_seconds * plan.target.chips
  assert chip_seconds * 459e12 * 0.5 == pytest.approx(six_nd, rel=0.05)


@pytest.mark.slow
def test_a_scaled_down_175b_plan_fits_and_agrees_with_its_compile(entry_point):
  """The 175B shape's head size and width-to-depth ratio at 4 layers, on 64 fake devices: the
  plan fits, and the analytic peak agrees with XLA's within 25%. Compared in float32 with full
  remat, where the two should agree: XLA:CPU computes bfloat16 in float32, and keeps other
  buffers than an accelerator would without remat."""
  shape = dict(num_layers=4, d_model=1536, num_heads=12, d_ff=6144, dtype="float32", remat="full")
  command = ["pretrain.aot", "--config=configs/gpt3.py:175b"]
  command += [f"--config.model.{k}={v}" for k, v in shape.items()] + ["--target=v5p-128"]
  out = entry_point(*command)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "plan for v5p-128: 64 v5p chips" in out.stdout
  peaks = re.search(r"fits: analytic peak ([\d.]+) GiB .* compiled .* ([\d.]+) GiB", out.stdout)
  analytic, compiled = float(peaks.group(1)), float(peaks.group(2))
  assert memory_model.disagreement(analytic, compiled) < 0.25, out.stdout
  assert re.search(r"time: [\d.]+ s per step at 40% MFU; [\d,]+ steps", out.stdout)
