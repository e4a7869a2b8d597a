"""Flax NNX models: shared layers, the GPT decoder and (later) the BERT encoder.

Parameters carry logical axis names only; the trainer turns them into shardings explicitly
(eval_shape -> NamedShardings -> jit(init, out_shardings)), so Flax's eager sharding of
variables at construction is switched off for everything that imports the models.
"""
from flax import nnx

nnx.use_eager_sharding(False)
