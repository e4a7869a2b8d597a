"""The median logged time of a train step, of one fresh run of `pretrain.training.trainer`:
the harness of the benchmarks that compare two variants of the same run in interleaved pairs."""

import contextlib
import statistics
import tempfile

import jax

from pretrain.training import trainer


def median_step_time(config, steps, variant=contextlib.nullcontext):
  """Median seconds a step (after the first logging window) of `config` run for `steps` steps
  on one device, inside the context `variant()`."""
  config = config.copy_and_resolve_references()
  config.train.update(total_steps=steps, log_every=max(1, steps // 6), eval_every=0, stop_at_step=0)
  config.checkpoint.every = 0
  times = []
  writer_write = trainer.metrics.Writer.write

  def write(self, step, scalars, prefix=""):
    if prefix == "train/" and step > config.train.log_every:
      times.append(scalars["step_time_s"])
    return writer_write(self, step, scalars, prefix)

  trainer.metrics.Writer.write = write
  try:
    with tempfile.TemporaryDirectory() as workdir, variant():
      trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  finally:
    trainer.metrics.Writer.write = writer_write
  return statistics.median(times)


def interleaved(config, steps, pairs, a, b):
  """[(time with a, time with b)] of `pairs` interleaved pairs of runs; a, b: contexts."""
  return [
    (median_step_time(config, steps, a), median_step_time(config, steps, b)) for _ in range(pairs)
  ]


def report(name_a, name_b, results):
  """Prints both variants' ms/step and the median ratio a/b with each pair's."""
  ratios = [a / b for a, b in results]
  print(
    f"device {jax.devices()[0].device_kind}; ms/step {name_a} "
    f"{[round(1e3 * a, 1) for a, _ in results]}, {name_b} {[round(1e3 * b, 1) for _, b in results]}"
  )
  print(
    f"{name_a} / {name_b}: median {statistics.median(ratios):.3f} "
    f"(pairs {', '.join(f'{r:.3f}' for r in ratios)})"
  )
