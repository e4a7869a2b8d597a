"""Host memory on CPU-only processes: freed blocks are kept for reuse, not handed back.

XLA:CPU allocates an executable's temporary buffer with posix_memalign at every call and
frees it after: 1.5 GB a step for the 6 x 384 character model at batch 16 x 256. glibc
serves a block that size with a fresh mmap (its threads' arenas cannot hold it, and blocks
over 32 MB are always mapped), so every step faults each page of it in again and zeroes it:
388k page faults and 0.77 s of kernel time a step, 15-20% of the step. With one arena, no
mmaps and no trimming, the next step reuses the pages the last one freed.

Only the main arena can hold such a block, and a thread keeps the arena it first allocated
from, so this runs before JAX starts its threads: in the entry points that run steps
(pretrain.cli.start) and the benchmarks that time them. It is left out where an accelerator
plugin is installed (unless JAX_PLATFORMS=cpu), on C libraries other than glibc, and when
PRETRAIN_HOST_MALLOC=default.

The costs: the process keeps its peak heap for its lifetime, as an accelerator runtime's
caching allocator does; and threads that allocate a lot at once contend for the one arena.
HF `tokenizers`' parallel encoding runs at about a third of its rate here, so a trainer that
tokenizes its corpus itself (the first run on new data) does that part about 3x slower;
`python -m input_pipeline.prepare` keeps glibc's defaults and tokenizes at the full rate.
"""
import ctypes
import importlib.metadata
import importlib.util
import os

ENV = "PRETRAIN_HOST_MALLOC"  # "default": leave glibc's settings alone
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # <malloc.h>


def accelerator_installed():
  """Whether JAX may find an accelerator: a PJRT plugin (CUDA, ROCm) or libtpu."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return any(p.strip() != "cpu" for p in platforms.split(","))
  return bool(importlib.metadata.entry_points(group="jax_plugins")
              or importlib.util.find_spec("jax_plugins")
              or importlib.util.find_spec("libtpu"))


def _glibc():
  try:
    if not os.confstr("CS_GNU_LIBC_VERSION"):
      return None
    return ctypes.CDLL("libc.so.6")
  except (AttributeError, ValueError, OSError):  # not glibc, or no confstr
    return None


def configure():
  """Keeps freed heap blocks for reuse on CPU-only glibc processes; True if it did."""
  choice = os.environ.get(ENV, "reuse")
  if choice not in ("reuse", "default"):
    raise ValueError(f"{ENV}={choice!r}: set it to 'reuse' (the default) or 'default' "
                     "(glibc's own settings)")
  if choice == "default" or accelerator_installed():
    return False
  libc = _glibc()
  if libc is None:
    return False
  # One arena (the main one, which grows with brk), no mmap'd blocks, never trimmed.
  return all([libc.mallopt(_M_ARENA_MAX, 1), libc.mallopt(_M_MMAP_MAX, 0),
              libc.mallopt(_M_TRIM_THRESHOLD, -1)])
