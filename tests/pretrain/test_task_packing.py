"""Fine-tuning rows packed several examples a row (config.data.pack_examples) give every task
head the losses and predictions of the same examples one a row: classification and regression
read each example's [CLS] (or the mean of its states), tagging each position, spans each
example's own positions."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import bert
from input_pipeline.finetuning import task_data
from models import encoder, model_config
from pretrain.objectives import tasks

VOCAB, T = 101, 48
LENGTHS = (5, 19, 3, 12, 26, 9, 14)  # 19 and 26: longer than the modern smoke window of 16


def _model(recipe, head, num_labels, **fields):
  section = ml_collections.ConfigDict(bert.get_config(f"smoke,recipe={recipe}").model.to_dict())
  section.update(dropout=0.0, nsp_head=False, vocab_size=VOCAB, num_labels=num_labels, **fields)
  return head(model_config.resolve(section, VOCAB), rngs=nnx.Rngs(0))


def _examples(recipe, labels):
  """Encoded examples as task_data's encoders give them: [CLS] a [SEP] (b [SEP]), padding."""
  rng = np.random.default_rng(1)
  n = len(LENGTHS)
  arrays = {
    "inputs": np.zeros((n, T), np.int32),
    "type_ids": np.zeros((n, T), np.int32),
    "input_mask": np.zeros((n, T), np.int32),
  }
  for i, length in enumerate(LENGTHS):
    arrays["inputs"][i, :length] = rng.integers(5, VOCAB, length)
    arrays["input_mask"][i, :length] = 1
    if recipe != "modern":  # a sentence pair: the second part has type 1
      arrays["type_ids"][i, length // 2 : length] = 1
  arrays.update(labels(rng, n))
  return arrays


def _classes(rng, n):
  return {"labels": rng.integers(0, 3, n).astype(np.int32)}


def _scores(rng, n):
  return {"labels": rng.random(n).astype(np.float32)}


def _tags(rng, n):
  tags = rng.integers(-1, 4, (n, T)).astype(np.int32)
  return {"labels": np.where(np.arange(T)[None] < np.array(LENGTHS)[:, None], tags, -1)}


def _spans(rng, n):
  start = np.array([rng.integers(0, k) for k in LENGTHS], np.int32)
  start[2] = 0  # an unanswerable window points at its [CLS]
  end = np.minimum(start + rng.integers(0, 3, n), np.array(LENGTHS) - 1).astype(np.int32)
  return {"start_positions": start, "end_positions": end}


CASES = {  # case: (head, outputs, labels, position keys)
  "classification": (encoder.SequenceClassifier, 3, _classes, ()),
  "classification, mean-pooled": (encoder.SequenceClassifier, 3, _classes, ()),
  "regression": (encoder.SequenceClassifier, 1, _scores, ()),
  "token_classification": (encoder.TokenClassifier, 4, _tags, ()),
  "span_extraction": (
    encoder.SpanClassifier,
    2,
    _spans,
    ("start_positions", "end_positions"),
  ),
}


def _run(name, model, rows):
  sequence = name.startswith("classification") or name == "regression"
  objective = tasks.OBJECTIVES["classification" if sequence else name]
  batch = {k: jnp.asarray(v) for k, v in rows.items()}
  batch["example_weights"] = jnp.ones(len(rows["inputs"]), jnp.float32)
  sums, predictions = objective.evaluate(model, batch, None)
  sums.update(objective.denominators(batch))
  return sums, {k: np.asarray(v) for k, v in predictions.items()}


@pytest.mark.parametrize("recipe", ["modern", "bert"])  # RoPE and local layers; learned, types
@pytest.mark.parametrize("name", list(CASES))
def test_packed_rows_give_the_losses_and_predictions_of_padded_ones(name, recipe):
  head, num_labels, labels, position_keys = CASES[name]
  pooling = "mean" if name.endswith("mean-pooled") else "cls"
  model = _model(recipe, head, num_labels, classifier_pooling=pooling)
  arrays = _examples(recipe, labels)
  keys = tuple(arrays)
  order = np.array([3, 0, 6, 1, 5, 2, 4])
  packing = task_data.pack(arrays, keys, order, T, position_keys)
  assert len(packing.arrays["inputs"]) < len(LENGTHS) and packing.segments > 1

  padded_sums, padded = _run(name, model, arrays)
  packed_sums, packed = _run(name, model, packing.arrays)
  assert set(padded_sums) == set(packed_sums)
  for k in padded_sums:
    np.testing.assert_allclose(packed_sums[k], padded_sums[k], rtol=1e-5, atol=1e-6, err_msg=k)
  unpacked = task_data.unpack(packed, packing, T)
  real = arrays["input_mask"].astype(bool)
  for k, v in padded.items():
    assert unpacked[k].shape == v.shape, k
    if v.ndim == 2:  # per position: the examples' own positions
      v, unpacked[k] = v[real], unpacked[k][real]
    np.testing.assert_allclose(unpacked[k], v, rtol=1e-5, atol=1e-5, err_msg=k)
