"""Checksums of a train state's arrays: recorded in every checkpoint's meta when it is saved,
and checked against the arrays a restore returns, so that a checkpoint whose files were
corrupted (flipped bytes, a truncated or missing file) is never trained on.

Each array's checksum is two 32-bit sums over its raw bits: the plain sum and a sum weighted by
an odd function of each element's position, so a change of any one element (or two swapped
elements) changes it. Computed by one jitted reduction over the sharded arrays: every device
sums its own shard and only two numbers per array leave it.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C)


def _bits(x):
  """The array's raw bits as uint32 (one per element; 8-byte elements are not used here)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[x.dtype.itemsize]
  return lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _position_weights(shape):
  """An odd uint32 per element that depends on its position."""
  weight = jnp.ones(shape, jnp.uint32)
  for d in range(len(shape)):
    even = (2 * _MULTIPLIERS[d % len(_MULTIPLIERS)]) & 0xFFFFFFFF
    weight = weight + lax.broadcasted_iota(jnp.uint32, shape, d) * jnp.uint32(even)
  return weight


@jax.jit
def _sums(tree):
  def one(x):
    bits = _bits(x)
    return jnp.stack(
      [
        jnp.sum(bits, dtype=jnp.uint32),
        jnp.sum(bits * _position_weights(bits.shape), dtype=jnp.uint32),
      ]
    )

  return jax.tree.map(one, tree)


def path_name(path):
  """'opt_state/1/0/nu/embed/embedding': a leaf's path, the same whether the containers are
  dicts, lists or named tuples (as a restore without the optimizer's types returns them)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def of(tree):
  """{path: [sum, weighted sum]} of every array in `tree` (JSON-ready)."""
  sums = jax.device_get(_sums(tree))
  return {
    path_name(p): [int(v) for v in np.asarray(s)]
    for p, s in jax.tree_util.tree_flatten_with_path(sums)[0]
  }


def mismatches(tree, recorded, prefix=""):
  """The paths of `tree` (a restored state, or part of it under `prefix`) whose checksums differ
  from `recorded` (a checkpoint's meta['checksums']); a path the record lacks is not checked."""
  found = of(tree)
  return [
    path
    for path, sums in found.items()
    if prefix + path in recorded and recorded[prefix + path] != sums
  ]


@jax.jit
def _non_finite(tree):
  return jax.tree.map(
    lambda x: jnp.logical_not(jnp.all(jnp.isfinite(x)))
    if jnp.issubdtype(x.dtype, jnp.floating)
    else jnp.bool_(False),
    tree,
  )


def non_finite(tree):
  """The paths of `tree` holding a NaN or an infinity."""
  flags = jax.device_get(_non_finite(tree))
  return [path_name(p) for p, bad in jax.tree_util.tree_flatten_with_path(flags)[0] if bad]
