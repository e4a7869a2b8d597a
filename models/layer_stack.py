"""Scanned <-> unscanned parameter trees: one home for the conversion.

With `scan_layers=True` the blocks' parameters are stacked along a leading 'layers' axis
(params['blocks'][...] of shape [L, ...]); without it they are a list (params['blocks'][i]).
A checkpoint saved in either layout loads into the other by converting its parameter tree;
evaluation, generation and Hugging Face export use these functions.
"""

import jax
import jax.numpy as jnp

BLOCKS = "blocks"


def is_stacked(params):
  """True when params['blocks'] is the scanned (stacked) layout."""
  blocks = params[BLOCKS]
  return not (blocks and all(isinstance(k, int) or str(k).isdigit() for k in blocks))


def num_layers(params):
  if is_stacked(params):
    return jax.tree.leaves(params[BLOCKS])[0].shape[0]
  return len(params[BLOCKS])


def unstack(params):
  """Scanned -> unscanned: {'blocks': {0: tree, 1: tree, ...}}."""
  blocks = params[BLOCKS]
  layers = {i: jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(num_layers(params))}
  return dict(params, **{BLOCKS: layers})


def stack(params):
  """Unscanned -> scanned: one tree whose leaves have a leading layer axis."""
  blocks = params[BLOCKS]
  layers = [blocks[k] for k in sorted(blocks, key=int)]
  return dict(params, **{BLOCKS: jax.tree.map(lambda *xs: jnp.stack(xs), *layers)})


def to_layout(params, scan):
  """`params` in the scanned (scan=True) or unscanned layout, whichever it is in now."""
  if is_stacked(params) == bool(scan):
    return params
  return stack(params) if scan else unstack(params)
