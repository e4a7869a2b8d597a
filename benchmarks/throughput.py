r"""Train-step throughput and achieved FLOP/s against the measured matmul peak of this machine.

  python -m benchmarks.throughput                 # all configs below
  python -m benchmarks.throughput --only=baby --steps=20

For each config: tokens/s of the full jitted train step (forward, backward, AdamW update) on
random tokens, achieved FLOP/s = tokens/s * (6N + 12*L*d*T) (see pretrain/metrics.py), and its
ratio to the f32 (or bf16) matmul peak measured in the same run on the same device.
"""
import functools
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from configs import gpt
from models import decoder
from pretrain import metrics, objectives, optimizer, sharding, trainer

_ONLY = flags.DEFINE_list("only", [], "Run only these configs.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per config (after 2 warm-up steps).")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype (bfloat16 on accelerators).")

# name -> (size, model overrides, batch, seq_len, vocab)
CONFIGS = {
    # nanoGPT's CPU "baby" Shakespeare model: char vocab 65, 4 layers, 4 heads, width 128.
    "baby": ("smoke", dict(num_layers=4, num_heads=4, d_model=128, max_len=64, use_bias=False,
                           vocab_multiple=1), 12, 64, 65),
    # nanoGPT's shakespeare_char model: 6 layers, 6 heads, width 384, block 256.
    "shakespeare_char": ("nano", dict(use_bias=False, vocab_multiple=1), 16, 256, 65),
    # GPT-2 small (124M) at sequence length 256.
    "gpt2_small_256": ("small", {}, 8, 256, 50257),
}


def bench(name, steps, dtype):
  size, overrides, batch, seq_len, vocab = CONFIGS[name]
  config = gpt.get_config(size)
  config.model.update(overrides, dtype=dtype)
  cfg = decoder.resolve(config.model, vocab)
  objective = objectives.get("causal_lm")
  tx, lr_fn = optimizer.make(config.optimizer, 1000)
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
  rules = [tuple(r) for r in config.mesh.rules]
  graphdef, logical = trainer.model_logical_specs(objective, cfg)
  init_fn = functools.partial(trainer.init_state, objective=objective, model_cfg=cfg, tx=tx)
  key = jax.random.PRNGKey(0)
  shardings = trainer.state_shardings(jax.eval_shape(init_fn, key), logical, tx, mesh, rules)
  state = jax.jit(init_fn, out_shardings=shardings)(key)
  data_sharding = sharding.batch_sharding(mesh, rules)
  step_fn = jax.jit(
      functools.partial(trainer.train_step, graphdef=graphdef, objective=objective, tx=tx,
                        lr_fn=lr_fn, grad_accum=1, micro_sharding=data_sharding),
      in_shardings=(shardings, data_sharding), out_shardings=(shardings, None), donate_argnums=(0,))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq_len + 1), 0, vocab)
  batch_arrays = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  for _ in range(2):
    state, out = step_fn(state, batch_arrays)
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = step_fn(state, batch_arrays)
  jax.block_until_ready(out)
  seconds = (time.perf_counter() - start) / steps
  n_params = decoder.count_params(cfg)
  tokens_per_s = batch * seq_len / seconds
  flops = metrics.flops_per_token(cfg, n_params, seq_len) * tokens_per_s
  return dict(params_m=n_params / 1e6, step_ms=seconds * 1e3, tokens_per_s=tokens_per_s,
              flops=flops)


def main(argv):
  del argv
  dtype = jnp.dtype(_DTYPE.value)
  device = jax.devices()[0]
  peak = metrics.measure_matmul_peak(n=2048, dtype=dtype)
  print(f"device: {device.device_kind} ({jax.default_backend()}), {jax.device_count()} device(s); "
        f"compute dtype {dtype}")
  print(f"measured {dtype} matmul peak (2048^3): {peak / 1e9:.1f} GFLOP/s")
  print("| config | params | batch x seq | step | tokens/s | achieved FLOP/s | / matmul peak |")
  print("|---|---|---|---|---|---|---|")
  for name in _ONLY.value or CONFIGS:
    r = bench(name, _STEPS.value, _DTYPE.value)
    _, _, batch, seq_len, _ = CONFIGS[name]
    print(f"| {name} | {r['params_m']:.2f}M | {batch} x {seq_len} | {r['step_ms']:.1f} ms | "
          f"{r['tokens_per_s']:,.0f} | {r['flops'] / 1e9:.1f} GFLOP/s | "
          f"{r['flops'] / peak:.3f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
