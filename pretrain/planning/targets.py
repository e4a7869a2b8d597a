"""Accelerator targets a plan is made for: each chip's memory, bf16 peak and topology, and the
names users give a slice or a cluster.

  v5p-1024       a TPU slice, named as Cloud TPU names it: v4 and v5p count TensorCores (two
                 per chip, so 512 chips), v5e and v6e count chips
  v5e-256x2      two such slices joined over the data-centre network (multi-slice)
  h100x256       256 GPUs, in nodes of 8 joined by NVLink

This module imports nothing else of the project (nor JAX): pretrain/aot.py reads a target from
the command line before JAX starts, to make that many fake devices.
"""

import dataclasses
import re

from pretrain.ground import errors

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip: what a plan needs of it."""

  name: str
  memory: float  # bytes of high-bandwidth memory per chip
  peak_flops: float  # dense bfloat16 FLOP/s per chip
  cores_per_chip: int  # TensorCores in the name's count (TPU names); 1 for GPUs
  host_chips: int  # chips per host (TPU VM) or node (NVLink domain): the tensor axis's limit
  max_chips: int  # the largest slice (TPU) or a practical cluster (GPU)
  tpu: bool


# Sources: Cloud TPU system architecture pages (cloud.google.com/tpu/docs/v4, /v5e, /v5p,
# /v6e: HBM per chip, peak bf16 TFLOP/s, TensorCores per chip, chips per host, largest slice);
# NVIDIA's A100, H100 SXM and H200 SXM datasheets (dense bf16 Tensor Core TFLOP/s, without
# sparsity; HBM; 8 GPUs per HGX node).
CHIPS = {
  c.name: c
  for c in (
    Chip("v4", 32 * GiB, 275e12, 2, 4, 4096, True),
    Chip("v5e", 16 * GiB, 197e12, 1, 4, 256, True),
    Chip("v5p", 95e9, 459e12, 2, 4, 8960, True),
    Chip("v6e", 32 * GiB, 918e12, 1, 4, 256, True),
    Chip("a100", 80 * GiB, 312e12, 1, 8, 16384, False),
    Chip("h100", 80 * GiB, 989e12, 1, 8, 16384, False),
    Chip("h200", 141 * GiB, 989e12, 1, 8, 16384, False),
  )
}


class TargetError(errors.UserError):
  """A target name that names no chip or no slice of one."""


@dataclasses.dataclass(frozen=True)
class Target:
  """`slices` slices (1 for a GPU cluster) of `chips_per_slice` chips each."""

  chip: Chip
  chips_per_slice: int
  slices: int = 1

  @property
  def chips(self) -> int:
    return self.chips_per_slice * self.slices

  @property
  def name(self) -> str:
    if not self.chip.tpu:
      return f"{self.chip.name}x{self.chips}"
    slices = f"x{self.slices}" if self.slices > 1 else ""
    return f"{self.chip.name}-{self.chips_per_slice * self.chip.cores_per_chip}{slices}"


_TPU = re.compile(r"^(v4|v5e|v5p|v6e)-(\d+)(?:x(\d+))?$")
_GPU = re.compile(r"^(a100|h100|h200)x(\d+)$")
_EXAMPLES = "e.g. v5p-1024, v5e-256x2 or h100x256"


def parse(name: str) -> Target:
  """A target from its name; a one-line TargetError on anything else."""
  if m := _TPU.match(name):
    chip = CHIPS[m.group(1)]
    count, slices = int(m.group(2)), int(m.group(3) or 1)
    if count % chip.cores_per_chip or not 0 < count // chip.cores_per_chip <= chip.max_chips:
      raise TargetError(
        f"--target={name}: {chip.name} slices count {chip.cores_per_chip} core(s) per chip, "
        f"up to {chip.max_chips} chips; {_EXAMPLES}"
      )
    return Target(chip, count // chip.cores_per_chip, max(1, slices))
  if m := _GPU.match(name):
    chip, count = CHIPS[m.group(1)], int(m.group(2))
    if not 0 < count <= chip.max_chips:
      raise TargetError(f"--target={name}: 1 to {chip.max_chips} {chip.name} GPUs; {_EXAMPLES}")
    return Target(chip, count)
  raise TargetError(f"--target={name}: not a target; one of {', '.join(CHIPS)}, {_EXAMPLES}")


def fake_devices(argv: list[str]) -> int:
  """The number of devices a command line asks for: --target's chips, or --devices=N; 0."""
  for arg in argv:
    if arg.startswith("--target="):
      return parse(arg.split("=", 1)[1]).chips
  for arg in argv:
    if arg.startswith("--devices="):
      return int(arg.split("=", 1)[1])
  return 0


def larger(target: Target) -> list[Target]:
  """The same chip's targets with more chips per slice (doubling up to the largest slice, the
  same number of slices), smallest first."""
  out, n = [], target.chips_per_slice * 2
  while n <= target.chip.max_chips:
    out.append(Target(target.chip, n, target.slices))
    n *= 2
  return out
