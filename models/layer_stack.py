"""The stack of Transformer blocks: building it, running it (scanned or looped, with a remat
policy, with or without a KV cache), and converting its parameters between the two layouts.

With `scan_layers=True` the blocks' parameters are stacked along a leading 'layers' axis
(params['blocks'][...] of shape [L, ...]); without it they are a list (params['blocks'][i]).
A checkpoint saved in either layout loads into the other by converting its parameter tree;
evaluation, generation and Hugging Face export use these functions.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from models import axes, layers

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


REMAT_POLICIES = {
  "full": None,  # save nothing: recompute the whole block in the backward pass
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
  # keep matmul outputs in host memory (GPU/TPU); where there is no host offload (CPU) it
  # falls back to 'dots'
  "offload": jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host"),
}


def remat_in_effect(name):
  """The remat policy that runs: 'offload' is 'dots' where there is no host memory to offload
  to (CPU); the trainer says so at start-up."""
  if name == "offload" and jax.default_backend() not in ("gpu", "tpu"):
    return "dots"
  return name


def remat_policy(name):
  return REMAT_POLICIES[remat_in_effect(name)]


def make_blocks(cfg, *, causal, rngs):
  """cfg.num_layers blocks: stacked along a leading 'layers' axis (scan) or a list."""
  if cfg.scan_layers:

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: axes.LAYERS})
    def make(rngs):
      return layers.TransformerBlock(cfg, causal=causal, rngs=rngs)

    return make(rngs)
  return nnx.List(
    [layers.TransformerBlock(cfg, causal=causal, rngs=rngs) for _ in range(cfg.num_layers)]
  )


def scan_unroll(cfg):
  """Layers per iteration of the scan over a stacked model (cfg.scan_unroll; the parameters'
  layout is the same whatever it is). 0 picks the whole stack up to 12 layers, compiled like an
  unscanned model: the loop's slicing and stacking of parameters and activations cost a small
  model much of its step. Deeper stacks, and stacks under remat, run one layer per iteration,
  which keeps compile time flat (both measured in benchmarks/RESULTS.md)."""
  unroll = cfg.scan_unroll
  if unroll:
    return min(unroll, cfg.num_layers)
  return cfg.num_layers if cfg.num_layers <= 12 and cfg.remat == "none" else 1


def run_blocks(blocks, x, *, positions, mask, dropout_key, scan, remat, unroll=1, per_layer=None):
  """Applies the blocks in order (lax.scan when stacked), with the remat policy. `per_layer`:
  the blocks' per-layer switches (layers.per_layer)."""
  num_layers = jax.tree.leaves(nnx.state(blocks))[0].shape[0] if scan else len(blocks)
  keys = [None] * num_layers
  if dropout_key is not None:
    keys = list(jax.random.split(dropout_key, num_layers))

  def apply(block, x, key, switches):
    # Block boundaries: examples split over the batch axes, the width over the tensor ways
    # (axes.ACT_EMBED); FSDP gathers weights, not activations.
    y = block(x, positions=positions, mask=mask, key=key, **switches)
    return axes.constrain(y, axes.ACTIVATION)

  if remat != "none":
    apply = nnx.remat(apply, policy=remat_policy(remat))
  if not scan:
    for i, (block, key) in enumerate(zip(blocks, keys)):
      x = apply(block, x, key, _layer(per_layer, i))
    return x
  layer_keys = None if dropout_key is None else jnp.stack(keys)

  @nnx.scan(
    in_axes=(0, nnx.Carry, None if layer_keys is None else 0, 0),
    out_axes=nnx.Carry,
    transform_metadata={nnx.PARTITION_NAME: axes.LAYERS},
    unroll=unroll,
  )
  def run(block, x, key, switches):
    return apply(block, x, key, switches)

  return run(blocks, x, layer_keys, _stacked(per_layer))


def _layer(per_layer, i):
  """Layer i's switches, {name: bool}."""
  return {name: flags[i] for name, flags in per_layer or ()}


def _stacked(per_layer):
  """The switches as arrays over layers, for lax.scan."""
  return {name: jnp.asarray(flags) for name, flags in per_layer or ()}


def run_blocks_cached(blocks, x, *, positions, cache, scan, unroll=1, per_layer=None):
  """The blocks over x with a KV cache {'k', 'v'} (each [layers, b, slots, kv, head_dim]);
  returns (x, updated cache)."""
  if not scan:
    ks, vs = [], []
    for i, block in enumerate(blocks):
      kv = (cache["k"][i], cache["v"][i])
      x, (k, v) = block(
        x, positions=positions, mask=None, key=None, cache=kv, **_layer(per_layer, i)
      )
      ks.append(k)
      vs.append(v)
    return x, {"k": jnp.stack(ks), "v": jnp.stack(vs)}

  @nnx.scan(
    in_axes=(0, nnx.Carry, 0, 0, 0),
    out_axes=(nnx.Carry, 0, 0),
    transform_metadata={nnx.PARTITION_NAME: axes.LAYERS},
    unroll=unroll,
  )
  def run(block, x, k, v, switches):
    x, (k, v) = block(x, positions=positions, mask=None, key=None, cache=(k, v), **switches)
    return axes.constrain(x, axes.ACTIVATION), k, v

  x, k, v = run(blocks, x, cache["k"], cache["v"], _stacked(per_layer))
  return x, {"k": k, "v": v}
