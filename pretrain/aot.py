r"""Ahead-of-time check: compile the train step for a mesh without running it.

  python -m pretrain.aot --config=configs/gpt.py:xl --config.mesh.fsdp=8 --config.mesh.data=1 \
      --devices=8 --memory_per_device=80e9

With --devices=N the check runs on N fake CPU devices (set before JAX starts), so a pod-sized
mesh can be checked on a laptop. It prints the per-device memory XLA plans for the step
(arguments, outputs, temporaries), the parameter + optimizer bytes each device holds, the
step's FLOPs (the MFU formula's, pretrain/training/metrics.py) and whether it fits
--memory_per_device. When it does not, it searches for the cheapest change that makes it fit
(`search`: bfloat16 compute and first moment, more fsdp, rematerialisation, gradient
accumulation, cumulatively and in that order) and prints the overrides that do.
Nothing is read from the dataset: the vocabulary size comes from config.model.vocab_size or
config.data.tokenizer.vocab_size. Exit status 0 when it fits (or no limit is given), 3 when not.

With --target=NAME (v5p-1024, v5e-256x2, h100x256) it plans for that target instead: it chooses
the mesh, remat, microbatches and dtypes that fit its chips, compiles the step on as many fake
devices, and prints the memory against the chip's, the FLOPs per step and the time (and, with
--price_per_chip_hour, the cost) to the config's token budget at --mfu. A target too small is
refused in one line that names the smallest that fits (exit status 3).

  python -m pretrain.aot --config=configs/gpt3.py:175b --target=v5p-1024

The library is pretrain/planning/ (compile_check.py, planner.py, targets.py).
"""

import os
import sys

from pretrain.ground import errors
from pretrain.planning import targets


def _fake_devices_from_argv():
  try:
    n = targets.fake_devices(sys.argv[1:])
  except errors.UserError as e:  # a bad --target: one line, exit status 2
    errors.fail(str(e))
  if n > 0:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (
      os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
    ).strip()


_fake_devices_from_argv()  # must precede the first import of jax

from absl import app, flags
from ml_collections import config_flags

from pretrain.devices import process
from pretrain.planning import compile_check, planner

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
flags.DEFINE_integer("devices", 0, "Fake CPU devices to compile for (0: the real devices).")
_MEMORY = flags.DEFINE_float("memory_per_device", 0.0, "Bytes per device to fit in (0: no check).")
_SEARCH = flags.DEFINE_bool(
  "search", True, "On a misfit, search for the cheapest change that fits."
)
_TARGET = flags.DEFINE_string(
  "target",
  "",
  "Plan for a named target (v5p-1024, v5e-256x2, h100x256; pretrain/planning/targets.py): "
  "choose the mesh, remat, microbatches and dtypes, compile on as many fake devices, time it.",
)
_MFU = flags.DEFINE_float("mfu", planner.DEFAULT_MFU, "--target: the MFU to time the plan at.")
_PRICE = flags.DEFINE_float("price_per_chip_hour", 0.0, "--target: dollars, for the cost line.")
flags.mark_flags_as_required(["config"])


def _named_fields(argv):
  """The config fields the command line sets (--config.mesh.fsdp=8 -> 'mesh.fsdp')."""
  return {a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")}


def main(argv):
  del argv
  if _TARGET.value:
    fixed = _named_fields(sys.argv[1:])
    text, fits = process.run_reporting_user_errors(
      planner.plan, _CONFIG.value, _TARGET.value, fixed, _MFU.value, _PRICE.value
    )
    print(text, flush=True)
    sys.exit(0 if fits else 3)
  r = process.run_reporting_user_errors(compile_check.analyse, _CONFIG.value)
  print(compile_check.report(r, _MEMORY.value), flush=True)
  if not _MEMORY.value or r["peak_bytes"] <= _MEMORY.value:
    return
  if _SEARCH.value:
    print("searching for the cheapest change that fits ...", flush=True)
    overrides, found = compile_check.search(_CONFIG.value, _MEMORY.value)
    if overrides is None:
      print("nothing on the ladder fits: use more devices (a larger fsdp) or a smaller batch")
    else:
      print(
        "fits with "
        + " ".join(f"--config.{k}={v}" for k, v in overrides.items())
        + f" (peak ~{compile_check.human_bytes(found['peak_bytes'])} per device)"
      )
  sys.exit(3)


if __name__ == "__main__":
  app.run(main, flags_parser=errors.parse_flags)
