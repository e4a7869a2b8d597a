"""Host memory on CPU-only processes (pretrain/host_memory.py): XLA's per-call temporary
buffer is reused from one call to the next instead of being faulted in again."""
import os
import subprocess
import sys

import pytest

from pretrain import host_memory

# An executable whose temporary buffer (the 4096 x 4096 product, 64 MB) is larger than any
# thread arena of glibc's holds; the page faults of its third call are printed.
_SCRIPT = """
import resource
from pretrain import host_memory
configured = host_memory.configure()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (x @ x.T).max(axis=0))
x = jnp.ones((4096, 64), jnp.float32)
for _ in range(2):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
f(x).block_until_ready()
print(configured, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _third_call_faults(choice):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PRETRAIN_HOST_MALLOC=choice)
  out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                       text=True, check=True).stdout.split()
  return out[0] == "True", int(out[1])


@pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's malloc only")  # pylint: disable=protected-access
def test_temporary_buffer_is_reused_not_faulted_in_again():
  configured, reused = _third_call_faults("reuse")
  left_alone, default = _third_call_faults("default")
  assert configured and not left_alone
  assert default > 0  # glibc maps the 64 MB block afresh at every call
  assert reused * 10 < default, (reused, default)


def test_bad_setting_is_one_line_naming_the_variable(monkeypatch):
  monkeypatch.setenv(host_memory.ENV, "yes")
  with pytest.raises(ValueError, match="PRETRAIN_HOST_MALLOC='yes'.*'reuse'.*'default'"):
    host_memory.configure()


def test_jax_platforms_decides_whether_an_accelerator_may_be_used(monkeypatch):
  for platforms, accelerator in (("cpu", False), ("cuda,cpu", True), ("tpu", True)):
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    assert host_memory.accelerator_installed() == accelerator
