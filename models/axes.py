"""Logical axis names carried by every parameter and by the key activations.

The mapping from these names to mesh axes is data in the config (`config.mesh.rules`); see
`pretrain/devices/sharding.py`. Keeping the names in one place lets the encoder, the decoder and the
rules agree without string typos.
"""

from pretrain.ground import errors

BATCH = "batch"  # examples in a batch
LENGTH = "length"  # positions along the sequence (activations)
EMBED = "embed"  # model width (of parameters)
# Model width of the residual stream between blocks. Sharding it over the tensor axis (as
# MaxText's `activation_embed`, and Megatron's sequence parallelism do) keeps each device's
# share of the activations that remat keeps at 1/tensor, with the all-reduce after each block
# becoming a reduce-scatter and an all-gather of the same volume.
ACT_EMBED = "activation_embed"
MLP = "mlp"  # hidden width of the feed-forward block
HEADS = "heads"  # query heads
KV_HEADS = "kv_heads"  # key/value heads (grouped-query attention)
HEAD_DIM = "head_dim"  # width of one head
VOCAB = "vocab"  # token vocabulary
POSITIONS = "positions"  # rows of a learned position table
LAYERS = "layers"  # the stacked-layer axis when scanning over layers
TYPES = "types"  # rows of the token-type (segment) table
CLASSES = "classes"  # outputs of a classification head

ACTIVATION = (BATCH, LENGTH, ACT_EMBED)
# A KV cache: keys (or values) of every layer, slot and head; it shards like the activations.
CACHE = (LAYERS, BATCH, LENGTH, KV_HEADS, HEAD_DIM)


class AxisRuleError(errors.UserError):
  """A logical axis with no rule in config.mesh.rules."""


def logical_to_mesh(names, rules):
  """Logical names -> a PartitionSpec over mesh axes; a mesh axis is used at most once per
  array (the first logical axis that claims it wins; later ones stay unsharded)."""
  import jax

  table = dict(rules)
  used, out = set(), []
  for name in names:
    if name is not None and name not in table:
      raise AxisRuleError(
        f"config.mesh.rules: no rule for logical axis {name!r}; add ({name!r}, None)"
      )
    target = table.get(name) if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(t for t in targets if t not in used)
    used.update(targets)
    out.append(None if not targets else targets[0] if len(targets) == 1 else targets)
  return jax.sharding.PartitionSpec(*out)


def constrain(x, names):
  """Sharding constraint on an activation by logical names, under the trainer's mesh and rules
  (flax's logical_axis_rules context); a no-op outside them (e.g. in unit tests)."""
  import jax
  from flax.core import spmd

  rules = spmd.get_logical_axis_rules()
  if not rules or jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_mesh(names, rules))
