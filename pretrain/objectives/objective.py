"""What an objective is (`Objective`: its model, data, loss and metrics, each a function),
and the losses and ratios every objective shares."""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  make_model: Callable  # (resolved model cfg, nnx.Rngs) -> nnx.Module
  build: Callable  # (prepared split, config.data, tokenizer, *, seq_len, seed,
  #  process_index, process_count): work done once per split and
  #  settings, shared out over processes (BERT's pairs)
  load: Callable  # (prepared split, config.data, tokenizer, **kw) -> a StepIndexed loader
  denominators: Callable  # batch -> dict of float32 counts
  loss: Callable  # (model, batch, dropout_key, denominators) -> (loss, sums)
  summarize: Callable  # summed sums + denominators -> dict of means, with 'loss'
  flops_per_token: Callable  # (resolved model cfg, params excl. positions, config) -> FLOPs
  fake_batch: Callable  # (config, batch size, vocab size) -> a random batch of numpy arrays
  eval_batch: Callable  # (batch, valid rows, bytes per token id or None) -> the batch with
  # padding rows weighted 0 and what evaluation needs beyond training
  # Fine-tuning tasks (pretrain/objectives/tasks.py) also give:
  load_data: Callable | None = None  # (config, tok, train) -> as pretrain.training.data.load_data
  evaluate: Callable | None = None  # (model, batch, denominators) -> (sums, predictions
  # per row): one forward pass for both
  score: Callable | None = None  # (predictions of the whole split, its loader) -> the
  # task's metrics (accuracy, F1, EM, ...)
  write_predictions: Callable | None = None  # (predictions, loader, path): the task's
  # submission format


@functools.lru_cache(maxsize=32)
def _abstract_model(objective: Objective, model_cfg) -> nnx.Module:
  return nnx.eval_shape(lambda: objective.make_model(model_cfg, nnx.Rngs(0)))


def abstract_split(objective: Objective, model_cfg, *filters) -> tuple:
  """nnx.split(model, *filters) of the objective's model for `model_cfg` (a resolved, frozen
  ModelConfig), its variables as shapes: nothing is allocated, and the model is traced once
  per objective and config however many parts of a run ask (its steps' shardings, parameter
  count, restores and conversions). Each call's states are its own to fill."""
  return nnx.split(_abstract_model(objective, model_cfg), *filters)


def abstract_params(objective: Objective, model_cfg) -> dict:
  """The model's parameters as a pure dict of ShapeDtypeStructs (abstract_split's)."""
  return nnx.to_pure_dict(abstract_split(objective, model_cfg, nnx.Param)[1])


def cross_entropy(logits, labels):
  """Per-position cross-entropy and correctness, always in float32.

  The label's logit is picked with a one-hot product rather than a gather: with the vocab
  axis sharded (tensor parallel) XLA's partitioner mis-partitioned the gather's gradient for
  some shapes on 3-axis meshes, while the one-hot form partitions like any elementwise op.
  """
  xent, correct, _ = cross_entropy_lse(logits, labels)
  return xent, correct


def cross_entropy_lse(logits, labels):
  """cross_entropy's (cross-entropy, correctness), and the log-partition logsumexp(logits)."""
  logits = logits.astype(jnp.float32)
  label_logit = jnp.sum(logits * jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype), -1)
  lse = jax.nn.logsumexp(logits, axis=-1)
  return lse - label_logit, (jnp.argmax(logits, -1) == labels).astype(jnp.float32), lse


def with_z_loss(model, loss, sums, lse, weights, denominator):
  """The loss plus model.z_loss * the weighted mean of logsumexp(logits)^2 (PaLM's z-loss: it
  keeps the softmax normaliser near 1), with that mean in the sums as 'z_sum'. Reported
  losses stay the plain cross-entropy."""
  coef = getattr(model, "z_loss", 0.0)
  if not coef:
    return loss, sums
  z_sum = jnp.sum(jnp.square(lse) * weights)
  return loss + coef * z_sum / jnp.maximum(denominator, 1.0), dict(sums, z_sum=z_sum)


def ratio(a, b):
  return float(a) / max(float(b), 1.0)


# ----------------------------------------------------------------------------- causal LM
