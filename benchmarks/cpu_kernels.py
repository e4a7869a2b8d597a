r"""The model's CPU-only kernels (flat matmuls with their own gradients, heads-major blocked
attention: models/cpu_kernels.py) against the program accelerators run, traced on the same CPU:
the same run, in interleaved pairs in one process, its logged time per step compared.

  python -m benchmarks.cpu_kernels [--config=configs/gpt.py:smoke] [--steps=60] [--pairs=3]

A CPU-only mechanism stays only while it pays at least 5% here (benchmarks/RESULTS.md).
"""

import contextlib

from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import step_times
from models import layers
from pretrain.devices import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gpt.py:smoke", "The run.")
_STEPS = flags.DEFINE_integer("steps", 60, "Steps of each run.")
_PAIRS = flags.DEFINE_integer("pairs", 3, "Interleaved pairs of runs.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  host_memory.configure()  # as the entry points do
  results = step_times.interleaved(
    _CONFIG.value,
    _STEPS.value,
    _PAIRS.value,
    contextlib.nullcontext,
    lambda: layers.built_for("accelerator"),
  )
  step_times.report("CPU kernels", "accelerator program", results)


if __name__ == "__main__":
  app.run(main)
