r"""Variants of the production train step on one accelerator, side by side in one run: which
layout, batch, remat or XLA setting pays, each as a ratio to the first variant, and what it
costs in compile time (the first step's time, compile included).

  python -m benchmarks.gpu_variants --row=gpt2_small_1024 \
      --variant=base: --variant=unroll2:scan_unroll=2 --variant=unscanned:scan_layers=False \
      --variant=b64:batch=64 --variant="cublas:xla=--xla_gpu_enable_triton_gemm=false"
  python -m benchmarks.gpu_variants --row=gpt2_small_1024 --variant=deep:num_layers=24 \
      --variant=deep_unrolled:num_layers=24,scan_unroll=24     # does unrolling pay at depth?

A variant is `label:key=value,key=value`, the keys being config.model fields, `batch` and
`xla` (XLA_FLAGS for that variant, which then runs in its own process). Each variant times
benchmarks/throughput.py's `bench` (the step pretrain.train runs) in bfloat16 with cuDNN's
attention; MFU is over the bf16 matmul peak measured in the same run and over the vendor's.
`--profile_dir` traces three steps of the first variant run with jax.profiler.
"""

import ast
import json
import os
import subprocess
import sys

import jax.numpy as jnp
from absl import app, flags

from benchmarks import throughput
from pretrain.training import metrics

_ROW = flags.DEFINE_enum(
  "row", "gpt2_small_1024", list(throughput.CONFIGS), "A row of benchmarks/throughput.py's CONFIGS."
)
_VARIANTS = flags.DEFINE_multi_string("variant", ["base:"], "label:key=value,... (see above).")
_STEPS = flags.DEFINE_integer("timed_steps", 20, "Timed steps per variant.")
_BATCH = flags.DEFINE_integer("batch", 0, "Batch of variants that name none (0: the table's).")
_PROFILE = flags.DEFINE_string("profile_dir", "", "Trace the first variant's steps here.")
_CHILD = flags.DEFINE_bool("child", False, "Run the one --variant and print its result as JSON.")


def parse(variant):
  """'label:k=v,k=v' -> (label, {k: v}) with Python literals where they parse."""
  label, _, spec = variant.partition(":")
  fields = {}
  for item in filter(None, spec.split(",")):
    key, _, value = item.partition("=")
    try:
      fields[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      fields[key] = value
  return label, fields


def run(variant, profile_dir=""):
  """The variant's result dict, in this process or (with XLA flags) in a child process."""
  label, fields = parse(variant)
  xla = fields.pop("xla", "")
  if xla:
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {xla}".strip())
    child = [
      sys.executable,
      "-m",
      "benchmarks.gpu_variants",
      "--child",
      f"--row={_ROW.value}",
      f"--timed_steps={_STEPS.value}",
      f"--batch={_BATCH.value}",
      f"--variant={label}:" + ",".join(f"{k}={v}" for k, v in fields.items()),
    ]
    out = subprocess.run(child, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
      raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed")
    return json.loads(out.stdout.strip().splitlines()[-1])
  batch = fields.pop("batch", _BATCH.value)
  return throughput.bench(
    _ROW.value,
    _STEPS.value,
    "bfloat16",
    batch=batch,
    attention="cudnn",
    model=fields,
    profile_dir=profile_dir,
  )


def main(argv):
  del argv
  if _CHILD.value:
    print(json.dumps(run(_VARIANTS.value[0])))
    return
  measured = metrics.measure_matmul_peak(n=8192, dtype=jnp.bfloat16, repeats=10)
  vendor, _ = metrics.peak_flops()
  seq_len = throughput.CONFIGS[_ROW.value][4]
  print(
    f"{_ROW.value}: bf16 matmul peak measured {measured / 1e12:.0f} TFLOP/s, "
    f"vendor {vendor / 1e12:.0f}"
  )
  # Variants with XLA flags run first, in their own processes: this one keeps the device
  # memory that its own variants took.
  order = sorted(
    range(len(_VARIANTS.value)), key=lambda k: "xla" not in parse(_VARIANTS.value[k])[1]
  )
  results = {}
  for k in order:
    try:
      results[k] = run(_VARIANTS.value[k], _PROFILE.value if k == order[0] else "")
    except Exception as e:
      results[k] = f"failed: {type(e).__name__}: {e}".replace("\n", " ")
    print(f"{_VARIANTS.value[k]}: {results[k]}", flush=True)
  print(
    "| variant | spec | batch x seq | first step (compile) | ms/step | tokens/s | "
    "vs first (tokens/s) | TFLOP/s | MFU (measured) | MFU (vendor) |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  for k, variant in enumerate(_VARIANTS.value):
    label, _, spec = variant.partition(":")
    r, first = results[k], results[0]
    if isinstance(r, str):
      print(f"| {label} | {spec} | {r} |")
      continue
    ratio = f"{r['tokens_per_s'] / first['tokens_per_s']:.3f}" if isinstance(first, dict) else ""
    print(
      f"| {label} | {spec} | {r['batch']} x {seq_len} | {r['first_step_s']:.1f} s | "
      f"{r['step_ms']:.1f} | "
      f"{r['tokens_per_s']:,.0f} | {ratio} | {r['flops'] / 1e12:.0f} | "
      f"{r['flops'] / measured:.3f} | {r['flops'] / vendor:.3f} |"
    )


if __name__ == "__main__":
  app.run(main)
