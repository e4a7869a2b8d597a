"""Logical axis names carried by every parameter and by the key activations.

The mapping from these names to mesh axes is data in the config (`config.mesh.rules`); see
`pretrain/sharding.py`. Keeping the names in one place lets the encoder, the decoder and the
rules agree without string typos.
"""

BATCH = "batch"          # examples in a batch
LENGTH = "length"        # positions along the sequence (activations)
EMBED = "embed"          # model width
MLP = "mlp"              # hidden width of the feed-forward block
HEADS = "heads"          # query heads
KV_HEADS = "kv_heads"    # key/value heads (grouped-query attention)
HEAD_DIM = "head_dim"    # width of one head
VOCAB = "vocab"          # token vocabulary
POSITIONS = "positions"  # rows of a learned position table
LAYERS = "layers"        # the stacked-layer axis when scanning over layers
TYPES = "types"          # rows of the token-type (segment) table
CLASSES = "classes"      # outputs of a classification head
