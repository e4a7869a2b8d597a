r"""The training loop's bound on steps in flight (pretrain/training/trainer.py: IN_FLIGHT) against
no bound, side by side: the same run, in interleaved pairs in one process, its logged time per
step compared.

  python -m benchmarks.in_flight [--config=configs/gpt.py:smoke] [--steps=60] [--pairs=3]

A bound of 2 lets a signal be saved within two steps; this checks that it costs no throughput
(the host still prepares the next batch while the device runs).
"""

import contextlib

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import step_times
from pretrain.devices import host_memory
from pretrain.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gpt.py:smoke", "The run.")
_STEPS = flags.DEFINE_integer("steps", 60, "Steps of each run.")
_PAIRS = flags.DEFINE_integer("pairs", 3, "Interleaved pairs of runs.")


@contextlib.contextmanager
def _in_flight(n):
  saved, trainer.IN_FLIGHT = trainer.IN_FLIGHT, n
  try:
    yield
  finally:
    trainer.IN_FLIGHT = saved


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  host_memory.configure()  # as the entry points do
  results = step_times.interleaved(
    _CONFIG.value, _STEPS.value, _PAIRS.value, lambda: _in_flight(2), lambda: _in_flight(10**9)
  )
  step_times.report("bounded (2 in flight)", "unbounded", results)


if __name__ == "__main__":
  app.run(main)
