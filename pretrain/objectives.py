"""Objectives: what the one trainer optimises. Each is (model builder, batch -> sums).

`loss(model, batch, dropout_key)` returns a dict of float32 *sums* with a denominator
'weight' (tokens that count); the trainer divides after summing over microbatches and
devices, so padding and packing never bias the mean. 'loss' is the summed objective.
"""
import dataclasses
from typing import Callable

import jax.numpy as jnp
import optax

from models import decoder


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  make_model: Callable      # (resolved model cfg, nnx.Rngs) -> nnx.Module
  loss: Callable            # (model, batch, dropout_key) -> dict of sums incl. 'loss', 'weight'
  batch_keys: tuple         # arrays the loader provides


def causal_lm_loss(model, batch, dropout_key):
  logits = model(batch["inputs"], positions=batch.get("positions"),
                 segment_ids=batch.get("segment_ids"), dropout_key=dropout_key)
  logits = logits.astype(jnp.float32)  # the loss is always computed in float32
  xent = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  weights = batch.get("weights", jnp.ones_like(xent))
  correct = (jnp.argmax(logits, -1) == batch["targets"]) * weights
  return {"loss": jnp.sum(xent * weights), "weight": jnp.sum(weights),
          "correct": jnp.sum(correct)}


OBJECTIVES = {
    "causal_lm": Objective(
        name="causal_lm",
        make_model=lambda cfg, rngs: decoder.Decoder(cfg, rngs=rngs),
        loss=causal_lm_loss,
        batch_keys=("inputs", "targets")),
}


def get(name):
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective: unknown {name!r}; choose one of {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]
