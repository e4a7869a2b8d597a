r"""Train-step throughput and achieved FLOP/s against the measured matmul peak of this machine.

  python -m benchmarks.throughput                 # all configs below
  python -m benchmarks.throughput --only=baby --steps=20

For each config: tokens/s of the full jitted train step (forward, backward, AdamW update) on
random data, achieved FLOP/s = tokens/s * FLOPs per token (the objective's formula, see
pretrain/training/metrics.py), and its ratio to the f32 (or bf16) matmul peak measured in the same run
on the same device.
"""

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from configs import bert, gpt
from models import layers, model_config
from pretrain.devices import host_memory, sharding
from pretrain.objectives import registry
from pretrain.training import metrics
from pretrain.training import steps as steps_lib

_ONLY = flags.DEFINE_list("only", [], "Run only these configs.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per config (after 2 warm-up steps).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype (bfloat16 on accelerators).")

# name -> (config file, config arg, model overrides, batch, seq_len, vocab)
CONFIGS = {
  # nanoGPT's CPU "baby" Shakespeare model: char vocab 65, 4 layers, 4 heads, width 128.
  "baby": (
    gpt,
    "smoke",
    dict(num_layers=4, num_heads=4, d_model=128, max_len=64, use_bias=False, vocab_multiple=1),
    12,
    64,
    65,
  ),
  # nanoGPT's shakespeare_char model: 6 layers, 6 heads, width 384, block 256.
  "shakespeare_char": (gpt, "nano", dict(use_bias=False, vocab_multiple=1), 16, 256, 65),
  # GPT-2 small (124M) at sequence length 256.
  "gpt2_small_256": (gpt, "small", {}, 8, 256, 50257),
  # BERT-small (4 layers, 512 wide) and BERT-base (110M), MLM + NSP at seq 128.
  "bert_small_128": (bert, "small", {}, 32, 128, 30522),
  "bert_base_128": (bert, "base", {}, 8, 128, 30522),
  # The accelerator rows (benchmarks/gpu.py): GPT-2 small at its own context, BERT-base at 512.
  "gpt2_small_1024": (gpt, "small", {}, 32, 1024, 50257),
  "bert_base_512": (bert, "base,seq=512", {}, 64, 512, 30522),
}
ACCELERATOR_ROWS = ("gpt2_small_1024", "bert_base_512")  # run only when named in --only


def bench(name, steps, dtype, batch=0, attention="", model=None, profile_dir=""):
  """The production train step of CONFIGS[name] (batch 0: the table's), timed on random data;
  `model` overrides config.model fields; `profile_dir` traces 3 more steps with jax.profiler."""
  module, arg, overrides, table_batch, seq_len, vocab = CONFIGS[name]
  batch = batch or table_batch
  config = module.get_config(arg)
  config.model.update(overrides, dtype=dtype)
  unknown = sorted(set(model or {}) - set(config.model))
  if unknown:
    raise ValueError(f"{name}: no config.model field {unknown}")
  config.model.update(model or {})
  if attention:
    config.model.attention = attention
  config.batch.update(size=batch, seq_len=seq_len)
  cfg = model_config.resolve(config.model, vocab)
  objective = registry.get(config.objective)
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
  rules = [tuple(r) for r in config.mesh.rules]
  batch_arrays = objective.fake_batch(config, batch, vocab)
  compiled = steps_lib.build_steps(
    config,
    objective,
    cfg,
    mesh,
    rules,
    {k: v.ndim for k, v in batch_arrays.items()},
    total_steps=1000,
  )
  state = compiled.init()
  batch_arrays = jax.device_put(batch_arrays, compiled.data_sharding)
  step_fn = compiled.train
  start = time.perf_counter()
  state, out = step_fn(state, batch_arrays)  # compiles
  jax.block_until_ready(out)
  first_step_s = time.perf_counter() - start
  state, out = step_fn(state, batch_arrays)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = step_fn(state, batch_arrays)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / steps
  if profile_dir:
    with jax.profiler.trace(profile_dir):
      for _ in range(3):
        state, out = step_fn(state, batch_arrays)
      jax.block_until_ready(out)
  n_params = layers.count_params(lambda: objective.make_model(cfg, nnx.Rngs(0)))
  tokens_per_s = batch * seq_len / seconds
  flops = objective.flops_per_token(cfg, n_params, config) * tokens_per_s
  return dict(
    params_m=n_params / 1e6,
    step_ms=seconds * 1e3,
    tokens_per_s=tokens_per_s,
    flops=flops,
    first_step_s=first_step_s,
    batch=batch,
  )


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  dtype = jnp.dtype(_DTYPE.value)
  device = jax.devices()[0]
  peak = (
    metrics.cached_matmul_peak(remeasure=True)
    if dtype == jnp.float32
    else metrics.measure_matmul_peak(n=2048, dtype=dtype)
  )
  print(
    f"device: {device.device_kind} ({jax.default_backend()}), {jax.device_count()} device(s); "
    f"compute dtype {dtype}"
  )
  print(f"measured {dtype} matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s")
  print("| config | params | batch x seq | step | tokens/s | achieved FLOP/s | / matmul peak |")
  print("|---|---|---|---|---|---|---|")
  for name in _ONLY.value or [n for n in CONFIGS if n not in ACCELERATOR_ROWS]:
    r = bench(name, _STEPS.value, _DTYPE.value)
    _, _, _, batch, seq_len, _ = CONFIGS[name]
    print(
      f"| {name} | {r['params_m']:.2f}M | {batch} x {seq_len} | {r['step_ms']:.1f} ms | "
      f"{r['tokens_per_s']:,.0f} | {r['flops'] / 1e9:.1f} GFLOP/s | "
      f"{r['flops'] / peak:.3f} |",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
