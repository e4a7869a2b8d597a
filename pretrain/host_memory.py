"""Host memory on CPU-only processes, opt-in: freed blocks kept for reuse, not handed back.

XLA:CPU allocates an executable's temporary buffer with posix_memalign at every call and
frees it after: 1.5 GB a step for the 6 x 384 character model at batch 16 x 256 (602 MiB
since the changes in benchmarks/RESULTS.md, with the scheduler below). glibc
serves a block that size with a fresh mmap (its threads' arenas cannot hold it, and blocks
over 32 MB are always mapped), so every step faults each page of it in again and zeroes it:
388k page faults and 0.77 s of kernel time a step, 15-20% of the step. With
PRETRAIN_HOST_MALLOC=reuse, one arena, no mmaps and no trimming let later steps reuse the
pages earlier ones freed: steps 15-26% faster on that model.

It is opt-in for what it costs in memory. glibc's heap does not give a freed block that size
back to the next request of the same size at once: it settles holding the buffer two or three
times over for the train steps measured (peak RSS 2.1 -> 4.7 GiB for that model, 6.3 -> 14.5
GiB for GPT-2 small at batch 8 x 256), and a bare posix_memalign loop of 128 MB blocks grew to
4-15 times the block before settling. bound() falls back to mapping blocks per step where
three buffers would take over half of the machine's memory. And threads that allocate a lot
at once contend for the one arena: HF `tokenizers`' parallel encoding runs at about a third
of its rate, so a trainer that tokenizes its corpus itself (the first run on new data)
does that part about 3x slower (`python -m input_pipeline.prepare` never sets it).

Only the main arena can hold such a block, and a thread keeps the arena it first allocated
from, so this runs before JAX starts its threads: in the entry points that run steps
(pretrain.cli.start) and the benchmarks that time them. It is left out where an accelerator
plugin is installed (unless JAX_PLATFORMS=cpu) and on C libraries other than glibc.

By default (either setting), configure() also makes that buffer smaller on CPU-only hosts:
XLA:CPU's memory-minimising scheduler rather than its concurrency-optimised one, which moves
every backward operation that needs only forward values (transposed copies for weight
gradients, layout copies of attention's keys and values) into the forward pass, where
their outputs wait for the backward. The 6 x 384 model's temporary buffer falls from 1181 to
818 MiB, and its page faults a step from 310k to 220k, at the same step time. It goes into
XLA_FLAGS, read when JAX first compiles (a per-jit compiler option does not reach XLA:CPU's
scheduler), unless XLA_FLAGS names the flag already.
"""
import ctypes
import importlib.metadata
import importlib.util
import os

from configs import errors

ENV = "PRETRAIN_HOST_MALLOC"  # "reuse" sets it; "default" (or unset) leaves glibc alone
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8  # <malloc.h>
_LARGEST_MMAP_THRESHOLD, _DEFAULT_MMAP_MAX = 32 << 20, 65536  # 64-bit glibc
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


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


_configured = []  # the libc handle, once configure() has set it


def configure():
  """Keeps freed heap blocks for reuse on CPU-only glibc processes where
  PRETRAIN_HOST_MALLOC=reuse; True if it did."""
  choice = os.environ.get(ENV) or "default"
  if choice not in ("reuse", "default"):
    raise errors.UserError(f"{ENV}={choice!r}: set it to 'reuse' (freed host memory kept "
                           "for reuse on CPU) or 'default' (glibc's own settings, the default)")
  if accelerator_installed():
    return False
  schedule_for_memory()
  if choice == "default":
    return False
  libc = _glibc()
  if libc is None:
    return False
  # One arena (the main one, which grows with brk), no mmap'd blocks, never trimmed.
  done = all([libc.mallopt(_M_ARENA_MAX, 1), libc.mallopt(_M_MMAP_MAX, 0),
              libc.mallopt(_M_TRIM_THRESHOLD, -1)])
  if done:
    _configured[:] = [libc]
  return done


def schedule_for_memory():
  """XLA:CPU's memory-minimising scheduler for the programs this process compiles (the
  module's doc), unless XLA_FLAGS sets the scheduler already."""
  flags = os.environ.get("XLA_FLAGS", "")
  if MEMORY_SCHEDULER.split("=")[0] not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {MEMORY_SCHEDULER}".strip()


def configured():
  return bool(_configured)


def bound(temp_bytes, share=0.5):
  """Maps blocks over 32 MB afresh again (glibc's default for them) when a step's temporary
  buffer, held three times, would take more than `share` of the machine's memory; True if
  it did.

  (The train steps measured settled at two or three; see the module's doc.)"""
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  if not _configured or 3 * temp_bytes <= share * total:
    return False
  libc = _configured.pop()
  return bool(libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)
              and libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX))
