r"""Compile time of the train step: a 48-layer smoke model against a 4-layer one.

  python -m benchmarks.compile_time

With scan_layers=True the layer stack is one lax.scan, so compile time should barely grow
with depth (goal: ratio <= 1.5); scan_layers=False is shown for comparison.
"""

import time

import jax
from absl import app

from configs import gpt
from models import model_config
from pretrain.devices import sharding
from pretrain.objectives import registry
from pretrain.training import steps as steps_lib


def compile_seconds(num_layers, scan):
  config = gpt.get_config("smoke")
  config.model.update(num_layers=num_layers, scan_layers=scan)
  objective = registry.get(config.objective)
  cfg = model_config.resolve(config.model, config.data.tokenizer.vocab_size)
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
  rules = [tuple(r) for r in config.mesh.rules]
  batch = objective.fake_batch(config, config.batch.size, cfg.vocab_size)
  steps = steps_lib.build_steps(
    config, objective, cfg, mesh, rules, {k: v.ndim for k, v in batch.items()}, total_steps=100
  )
  abstract_batch = {
    k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=steps.data_sharding[k])
    for k, v in batch.items()
  }
  start = time.perf_counter()
  with sharding.context(mesh, rules):
    steps.train_jit.lower(steps.abstract_state, abstract_batch).compile()
  return time.perf_counter() - start


def main(argv):
  del argv
  print(f"device: {jax.devices()[0].device_kind}; smoke model (width 64), train step lower+compile")
  print("| layers | scan | compile s |")
  print("|---|---|---|")
  results = {}
  for scan in (True, False):
    for n in (4, 48):
      results[(n, scan)] = compile_seconds(n, scan)
      print(f"| {n} | {scan} | {results[(n, scan)]:.2f} |", flush=True)
  print(
    f"ratio 48/4 layers with scan: {results[(48, True)] / results[(4, True)]:.2f} "
    f"(without scan: {results[(48, False)] / results[(4, False)]:.2f})"
  )


if __name__ == "__main__":
  app.run(main)
