"""Packed rows: several documents in one row, each its own segment, give each document the
outputs it has alone in a padded row (attention kept within a segment, positions restarted)."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import bert
from models import encoder, model_config

VOCAB = 101


def _model(recipe):
  section = bert.get_config(f"smoke,recipe={recipe}").model
  section = ml_collections.ConfigDict(section.to_dict())
  section.update(dropout=0.0, nsp_head=False, vocab_size=VOCAB)
  return encoder.Encoder(model_config.resolve(section, VOCAB), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("recipe", ["modern", "roberta"])  # RoPE and local layers; learned
def test_a_packed_row_equals_its_documents_padded(recipe):
  model = _model(recipe)
  rng = np.random.default_rng(0)
  lengths, t = (11, 23, 7), 48  # the middle one longer than the modern smoke window of 16
  docs = [rng.integers(5, VOCAB, n) for n in lengths]
  packed = np.zeros((1, t), np.int32)
  packed[0, : sum(lengths)] = np.concatenate(docs)
  segment = np.repeat(np.arange(1, 4), lengths)
  segment_ids = np.pad(segment, (0, t - len(segment)), constant_values=3)[None]
  positions = np.concatenate([np.arange(n) for n in lengths] + [np.arange(t - sum(lengths))])
  mask = (np.arange(t) < sum(lengths))[None].astype(np.int32)
  hidden = model(
    jnp.asarray(packed),
    input_mask=jnp.asarray(mask),
    positions=jnp.asarray(positions[None], jnp.int32),
    segment_ids=jnp.asarray(segment_ids, jnp.int32),
  )
  alone = np.zeros((3, t), np.int32)
  for i, d in enumerate(docs):
    alone[i, : len(d)] = d
  alone_mask = (np.arange(t)[None] < np.array(lengths)[:, None]).astype(np.int32)
  padded = model(jnp.asarray(alone), input_mask=jnp.asarray(alone_mask))
  start = 0
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(hidden[0, start : start + n], padded[i, :n], rtol=1e-5, atol=1e-5)
    # the masked-LM predictions read each document's own positions
    at = np.arange(start, start + n, 3)[None]
    np.testing.assert_allclose(
      model.mlm_logits(hidden, jnp.asarray(at)),
      model.mlm_logits(padded[i : i + 1], jnp.asarray(at - start)),
      rtol=1e-5,
      atol=1e-5,
    )
    start += n


def test_segment_means_average_each_examples_own_tokens():
  rng = np.random.default_rng(2)
  hidden = rng.normal(size=(2, 10, 4)).astype(np.float32)
  mask = np.array([[1] * 7 + [0] * 3, [1] * 10], np.int32)
  segment_ids = np.array([[1, 1, 1, 2, 2, 3, 3, 3, 3, 3], [1, 1, 2, 2, 2, 2, 2, 2, 2, 2]])
  means = np.asarray(encoder.segment_means(hidden, mask, segment_ids, segments=3))
  assert means.shape == (2, 3, 4)
  for row, cols, slot in ((0, [0, 1, 2], 0), (0, [3, 4], 1), (0, [5, 6], 2), (1, [2, 9], 1)):
    cols = range(cols[0], cols[-1] + 1)
    np.testing.assert_allclose(means[row, slot], hidden[row, cols].mean(0), rtol=1e-6)
  np.testing.assert_array_equal(means[1, 2], 0.0)  # an empty slot
  rows = np.asarray(encoder.segment_means(hidden, mask))  # one example a row
  np.testing.assert_allclose(rows[0], hidden[0, :7].mean(0), rtol=1e-6)
  np.testing.assert_allclose(rows[1], hidden[1].mean(0), rtol=1e-6)
