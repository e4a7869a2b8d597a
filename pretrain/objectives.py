"""Objectives: what the one trainer optimises, each a small set of functions.

An objective names its model, its data and its loss:
  * `denominators(batch)`: the counts the means divide by (tokens, masked tokens, examples),
    taken over the whole global batch before it is split into microbatches, so that gradient
    accumulation gives exactly the gradient of the full-batch mean;
  * `loss(model, batch, dropout_key, denominators)` -> (scalar loss, dict of float32 sums);
  * `summarize(sums and denominators added over steps/batches)` -> the means to report.
Padding rows and tokens carry weight 0 and so contribute nothing.
"""
import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import optax

from input_pipeline import lm_data
from models import decoder


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  make_model: Callable     # (resolved model cfg, nnx.Rngs) -> nnx.Module
  load_split: Callable     # (config.data, tokenizer, split, **kw) -> a step-indexed loader
  denominators: Callable   # batch -> dict of float32 counts
  loss: Callable           # (model, batch, dropout_key, denominators) -> (loss, sums)
  summarize: Callable      # summed sums + denominators -> dict of means, with 'loss'


def _xent(logits, labels):
  """Per-position cross-entropy and correctness, always in float32."""
  logits = logits.astype(jnp.float32)
  return (optax.softmax_cross_entropy_with_integer_labels(logits, labels),
          (jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def _ratio(a, b):
  return float(a) / max(float(b), 1.0)


# ----------------------------------------------------------------------------- causal LM


def causal_lm_denominators(batch):
  return {"tokens": jnp.sum(batch.get("weights", jnp.ones(batch["targets"].shape, jnp.float32)))}


def causal_lm_loss(model, batch, dropout_key, denominators):
  logits = model(batch["inputs"], positions=batch.get("positions"),
                 segment_ids=batch.get("segment_ids"), dropout_key=dropout_key)
  xent, correct = _xent(logits, batch["targets"])
  weights = batch.get("weights", jnp.ones_like(xent))
  sums = {"loss_sum": jnp.sum(xent * weights), "correct": jnp.sum(correct * weights)}
  return sums["loss_sum"] / jnp.maximum(denominators["tokens"], 1.0), sums


def causal_lm_summarize(s):
  loss = _ratio(s["loss_sum"], s["tokens"])
  return {"loss": loss, "perplexity": math.exp(min(loss, 80.0)),
          "accuracy": _ratio(s["correct"], s["tokens"])}


OBJECTIVES = {
    "causal_lm": Objective(
        name="causal_lm",
        make_model=lambda cfg, rngs: decoder.Decoder(cfg, rngs=rngs),
        load_split=lm_data.load_split,
        denominators=causal_lm_denominators,
        loss=causal_lm_loss,
        summarize=causal_lm_summarize),
}


def get(name):
  if name not in OBJECTIVES:
    raise ValueError(f"config.objective: unknown {name!r}; choose one of {', '.join(OBJECTIVES)}")
  return OBJECTIVES[name]
