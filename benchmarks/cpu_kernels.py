r"""The model's CPU-only kernels (flat matmuls with their own gradients, heads-major blocked
attention: models/cpu_kernels.py) against the program accelerators run, traced on the same CPU:
the same run, in interleaved pairs in one process, its logged time per step compared.

  python -m benchmarks.cpu_kernels [--config=configs/gpt.py:smoke] [--steps=60] [--pairs=3]
      [--only=attention|matmuls]

--only keeps one of the two on and compares it with both off.

A CPU-only mechanism stays only while it pays at least 5% here (benchmarks/RESULTS.md).
"""

import contextlib

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from benchmarks import step_times
from models import cpu_kernels
from pretrain.devices import host_memory

_CONFIG = config_flags.DEFINE_config_file("config", "configs/gpt.py:smoke", "The run.")
_STEPS = flags.DEFINE_integer("steps", 60, "Steps of each run.")
_PAIRS = flags.DEFINE_integer("pairs", 3, "Interleaved pairs of runs.")
_ONLY = flags.DEFINE_enum("only", None, ["attention", "matmuls"], "Keep only this kernel on.")


@contextlib.contextmanager
def _only(kernel):
  """The CPU kernels with the other one off: attention as XLA's, or dense layers as plain."""
  saved = dict(attention=cpu_kernels.attention, rows=cpu_kernels.rows, mlp=cpu_kernels.mlp)
  if kernel == "matmuls":
    cpu_kernels.attention = _xla_attention
  else:
    # 3-D activations: the dense layers' dot_general takes lax.dot_general's path
    cpu_kernels.rows = lambda layer, x, in_dims=1: layer(x)
    cpu_kernels.mlp = _plain_mlp
  try:
    yield
  finally:
    for name, fn in saved.items():
      setattr(cpu_kernels, name, fn)


def _xla_attention(q, k, v, *, mask=None, causal=False):
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)


def _plain_mlp(inputs, act, proj, x):
  return proj(act(*(dense(x) for dense in inputs)))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  host_memory.configure()  # as the entry points do
  kernels = (lambda: _only(_ONLY.value)) if _ONLY.value else contextlib.nullcontext
  results = step_times.interleaved(
    _CONFIG.value,
    _STEPS.value,
    _PAIRS.value,
    kernels,
    lambda: cpu_kernels.built_for("accelerator"),
  )
  step_times.report(f"CPU kernels ({_ONLY.value or 'both'})", "accelerator program", results)


if __name__ == "__main__":
  app.run(main)
