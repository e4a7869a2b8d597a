"""Host memory on CPU-only processes, opt-in: with PRETRAIN_HOST_MALLOC=reuse, freed heap
blocks are kept for reuse.

XLA:CPU allocates an executable's temporary buffer at every call and frees it after; glibc maps
a block that size afresh each time, so every step faults in and zeroes each page of it again.
With `reuse`, one malloc arena, no mmap'd blocks and no trimming let later steps reuse the pages
earlier ones freed: 15-26% faster steps on the CPU benchmarks, at two to three times the
buffer's memory (benchmarks/RESULTS.md, 2026-11-26), hence opt-in; bound() falls back where
that memory would not fit. It is set before JAX starts its threads (a thread keeps the arena
it first allocated from), by the entry points that run steps (pretrain.devices.process.start), and left
out where an accelerator may be used or the C library is not glibc.

(The trainer's restart for huge pages and XLA:CPU's memory-minimising scheduler, once here,
are gone: neither paid 5% on the benchmarks' steps; benchmarks/RESULTS.md, 2026-12-06.)
"""

import ctypes
import importlib.metadata
import importlib.util
import os

from pretrain.ground import errors

ENV = "PRETRAIN_HOST_MALLOC"  # "default" (or unset) or "reuse": configure()
CHOICES = ("default", "reuse")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8  # <malloc.h>
_LARGEST_MMAP_THRESHOLD, _DEFAULT_MMAP_MAX = 32 << 20, 65536  # 64-bit glibc


def accelerator_installed():
  """Whether JAX may find an accelerator: a PJRT plugin (CUDA, ROCm) or libtpu."""
  platforms = os.environ.get("JAX_PLATFORMS", "")
  if platforms:
    return any(p.strip() != "cpu" for p in platforms.split(","))
  return bool(
    importlib.metadata.entry_points(group="jax_plugins")
    or importlib.util.find_spec("jax_plugins")
    or importlib.util.find_spec("libtpu")
  )


def _glibc():
  if _glibc_version() == (0, 0):
    return None
  try:
    return ctypes.CDLL("libc.so.6")
  except OSError:
    return None


_configured: list = []  # the libc handle, once configure() has set it


def configure():
  """Where PRETRAIN_HOST_MALLOC=reuse, freed heap blocks kept for reuse (True if it did that);
  glibc's own settings otherwise. Call it before JAX starts its threads."""
  choice = os.environ.get(ENV) or "default"
  if choice not in CHOICES:
    raise errors.UserError(
      f"{ENV}={choice!r}: set it to 'default' (glibc's own settings) or "
      "'reuse' (freed host memory kept for reuse on CPU)"
    )
  if choice != "reuse" or accelerator_installed():
    return False
  libc = _glibc()
  if libc is None:
    return False
  # One arena (the main one, which grows with brk), no mmap'd blocks, never trimmed.
  done = all(
    [
      libc.mallopt(_M_ARENA_MAX, 1),
      libc.mallopt(_M_MMAP_MAX, 0),
      libc.mallopt(_M_TRIM_THRESHOLD, -1),
    ]
  )
  if done:
    _configured[:] = [libc]
  return done


def _glibc_version():
  """(major, minor) of the C library where it is glibc, else (0, 0)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" else (0, 0)
  except (AttributeError, ValueError, OSError):
    return (0, 0)


def configured():
  return bool(_configured)


def bound(temp_bytes, share=0.5):
  """Maps blocks over 32 MB afresh again (glibc's default for them) when a step's temporary
  buffer, held three times, would take more than `share` of the machine's memory; True if
  it did (the train steps measured settled at two or three)."""
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if not _configured or 3 * temp_bytes <= share * total:
    return False
  libc = _configured.pop()
  return bool(
    libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)
    and libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
  )
