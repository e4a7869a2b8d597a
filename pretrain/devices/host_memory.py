"""Host memory on CPU-only processes: huge pages for XLA's per-step buffer by default; freed
blocks kept for reuse, opt-in.

XLA:CPU allocates an executable's temporary buffer with posix_memalign at every call and
frees it after: 602 MiB a step for the 6 x 384 character model at batch 16 x 256 (with the
scheduler below and the changes in benchmarks/RESULTS.md), 1.2 GiB for BERT-base at batch 8
x 128. glibc serves a block that size with a fresh mmap (its threads' arenas cannot hold it,
and blocks over 32 MB are always mapped), so every step faults each page of it in again and
zeroes it: 159k page faults a step for the character model, 321k for BERT-base.

By default (PRETRAIN_HOST_MALLOC unset or 'default') the trainer restarts itself once, in
place, with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 where the kernel gives transparent huge
pages only to memory advised to take them (restart_with_huge_pages): glibc then advises its
mapped blocks, which fault in 2 MiB at a time. The character model's steps take about 1k page
faults instead of 159k, BERT-base's 1k instead of 321k; the kernel's time a step falls from
0.34-0.41 to 0.14-0.22 s and from 0.62 to 0.24 s; over 13 interleaved pairs of runs the steps
were 5% faster on average (from 8% slower to 14% faster: the machine's noise), at the same
peak RSS. 'glibc' leaves glibc's settings as they are.

With PRETRAIN_HOST_MALLOC=reuse, one arena, no mmaps and no trimming let later steps reuse the
pages earlier ones freed, with no faults at all. It is opt-in for what it costs in memory.
glibc's heap does not give a freed block that size back to the next request of the same size
at once: it settles holding the buffer two or three times over for the train steps measured
(peak RSS 2.1 -> 4.7 GiB for that model, 6.3 -> 14.5 GiB for GPT-2 small at batch 8 x 256),
and a bare posix_memalign loop of 128 MB blocks grew to 4-15 times the block before settling.
bound() falls back to mapping blocks per step where three buffers would take over half of the
machine's memory. And threads that allocate a lot at once contend for the one arena: HF
`tokenizers`' parallel encoding runs at about a third of its rate, so a trainer that tokenizes
its corpus itself (the first run on new data) does that part about 3x slower (`python -m
input_pipeline.prepare` never sets it).

Only the main arena can hold such a block, and a thread keeps the arena it first allocated
from, so this runs before JAX starts its threads: in the entry points that run steps
(pretrain.cli.start_host_memory) and the benchmarks that time them. It is left out where an
accelerator plugin is installed (unless JAX_PLATFORMS=cpu) and on C libraries other than glibc.

Either way, configure() also makes that buffer smaller on CPU-only hosts:
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
import sys

from pretrain.ground import errors

ENV = "PRETRAIN_HOST_MALLOC"  # "default" (or unset), "reuse" or "glibc": configure()
CHOICES = ("default", "reuse", "glibc")
HUGE_PAGES = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
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
  if _glibc_version() == (0, 0):
    return None
  try:
    return ctypes.CDLL("libc.so.6")
  except OSError:
    return None


_configured = []  # the libc handle, once configure() has set it


def configure(huge_pages=False):
  """Host memory for a CPU-only entry point, before JAX starts its threads. By default, where
  `huge_pages` (the trainer, and the benchmarks that time its steps), huge pages for glibc's
  mapped blocks: the process restarts itself once for them (restart_with_huge_pages). Where
  PRETRAIN_HOST_MALLOC=reuse, freed heap blocks kept for reuse (True if it did that); where it
  is 'glibc', glibc's own settings."""
  choice = os.environ.get(ENV) or "default"
  if choice not in CHOICES:
    raise errors.UserError(f"{ENV}={choice!r}: set it to 'default' (huge pages for the "
                           "step's buffers on CPU, the default), 'reuse' (freed host memory "
                           "kept for reuse) or 'glibc' (glibc's own settings)")
  if accelerator_installed():
    return False
  schedule_for_memory()
  if choice == "default" and huge_pages:
    restart_with_huge_pages()
  if choice != "reuse":
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


def huge_pages_env():
  """The environment to restart this process in for huge pages (restart_with_huge_pages), or
  None where that would not help or cannot be done: glibc older than 2.35 (or none), a kernel
  whose transparent huge pages are not 'madvise' ('always' gives every block them already,
  'never' none), GLIBC_TUNABLES naming glibc.malloc.hugetlb already, or a __main__ that cannot
  be run again (an interactive session, `python -c`)."""
  tunables = tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES", ""))
  main = sys.modules.get("__main__")
  if (tunables is None or _glibc_version() < (2, 35) or _transparent_huge_pages() != "madvise"
      or not getattr(main, "__file__", None) or sys.flags.interactive):
    return None
  return dict(os.environ, GLIBC_TUNABLES=tunables)


def tunables_with_huge_pages(tunables):
  """GLIBC_TUNABLES `tunables` with glibc.malloc.hugetlb=1 added, or None where they name
  glibc.malloc.hugetlb already (a user's setting, kept)."""
  if "glibc.malloc.hugetlb" in tunables:
    return None
  return ":".join(filter(None, (tunables, HUGE_PAGES)))


def _glibc_version():
  """(major, minor) of the C library where it is glibc, else (0, 0)."""
  try:
    name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    return tuple(int(v) for v in version.split(".")[:2]) if name == "glibc" else (0, 0)
  except (AttributeError, ValueError, OSError):
    return (0, 0)


def _transparent_huge_pages():
  """The kernel's transparent huge page setting ('always', 'madvise' or 'never'), or None."""
  try:
    with open(THP_SETTING, encoding="ascii") as f:
      return f.read().split("[", 1)[1].split("]", 1)[0]
  except (OSError, IndexError):
    return None


def restart_with_huge_pages():
  """Runs this process's command again in its place (execve: the same pid, arguments and
  environment) with glibc's malloc advising transparent huge pages for the blocks it maps
  (GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which glibc reads only as a process starts), where
  huge_pages_env() says it would help. XLA:CPU's temporary buffer, mapped afresh at every step,
  then faults in 2 MiB at a time (the module's doc, benchmarks/RESULTS.md)."""
  env = huge_pages_env()
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)


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
