r"""The training loop's bound on steps in flight (pretrain/training/trainer.py: IN_FLIGHT) against
no bound, side by side: the same run, in interleaved pairs in one process, its logged time per
step compared.

  python -m benchmarks.in_flight [--config=configs/gpt.py:smoke] [--steps=60] [--pairs=3]

A bound of 2 lets a signal be saved within two steps; this checks that it costs no throughput
(the host still prepares the next batch while the device runs).
"""

import statistics
import tempfile

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from pretrain.devices import host_memory
from pretrain.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gpt.py:smoke", "The run.")
_STEPS = flags.DEFINE_integer("steps", 60, "Steps of each run.")
_PAIRS = flags.DEFINE_integer("pairs", 3, "Interleaved pairs of runs.")


def _step_time(in_flight):
  """Median logged seconds a step (after the first window) of one fresh run."""
  trainer.IN_FLIGHT = in_flight
  config = _CONFIG.value
  config.train.update(
    total_steps=_STEPS.value, log_every=max(1, _STEPS.value // 6), eval_every=0, stop_at_step=0
  )
  config.checkpoint.every = 0
  with tempfile.TemporaryDirectory() as workdir:
    times = []
    writer_write = trainer.metrics.Writer.write

    def write(self, step, scalars, prefix=""):
      if prefix == "train/" and step > config.train.log_every:
        times.append(scalars["step_time_s"])
      return writer_write(self, step, scalars, prefix)

    trainer.metrics.Writer.write = write
    try:
      trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
    finally:
      trainer.metrics.Writer.write = writer_write
  return statistics.median(times)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  host_memory.configure()  # as the entry points do
  bounded, unbounded = [], []
  for _ in range(_PAIRS.value):
    bounded.append(_step_time(2))
    unbounded.append(_step_time(10**9))
  ratios = [b / u for b, u in zip(bounded, unbounded)]
  print(
    f"device {jax.devices()[0].device_kind}; ms/step bounded (2 in flight) "
    f"{[round(1e3 * t, 1) for t in bounded]}, unbounded {[round(1e3 * t, 1) for t in unbounded]}"
  )
  print(
    f"bounded / unbounded: median {statistics.median(ratios):.3f} "
    f"(pairs {', '.join(f'{r:.3f}' for r in ratios)})"
  )


if __name__ == "__main__":
  app.run(main)
