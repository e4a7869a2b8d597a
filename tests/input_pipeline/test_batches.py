"""Step-indexed global batches and mixtures (input_pipeline/batches.py): elastic across process
counts, deterministic, weighted, with per-dataset epochs."""

import numpy as np
import pytest

from input_pipeline import batches, bert_data, lm_data
from input_pipeline.corpora import sources
from tests.input_pipeline.test_masking import PAD, _examples, _spec


def _windows(n_tokens, seed, batch_size=8, offset=0, document_mask=False):
  tokens = (np.arange(n_tokens) + offset).astype(np.int32)
  return lm_data.PackedWindows(tokens, 10, batch_size, seed, True, document_mask, eos_id=3)


def _masked(seed, batch_size=8):
  return bert_data.MaskedExamples.from_examples(
    _examples(),
    seq_len=32,
    pad_id=PAD,
    batch_size=batch_size,
    seed=seed,
    shuffle=True,
    spec=_spec(max_predictions=6),
    nsp=True,
  )


def _mixture(batch_size=8):
  return batches.Mixture(
    {
      "a": _windows(1000, [0, 0], batch_size),
      "b": _windows(300, [0, 1], batch_size, offset=100_000),
    },
    {"a": 0.7, "b": 0.3},
    batch_size,
  )


def _equal(x, y):
  assert sorted(x) == sorted(y)
  for k in x:
    np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize(
  "make",
  [lambda: _windows(1000, [0, 0]), lambda: _masked([3, 0]), _mixture],
  ids=["gpt_windows", "bert_masked", "mixture"],
)
def test_processes_rows_make_the_same_global_batch(make):
  """1, 2, 4 or 8 processes, each asking for its rows, assemble the one-process batch."""
  loader = make()
  for step in (0, 1, 7, 130):  # 130: several epochs in
    whole = loader.batch(step)
    for processes in (2, 4, 8):
      local = 8 // processes
      parts = [make().batch(step, np.arange(p * local, (p + 1) * local)) for p in range(processes)]
      _equal({k: np.concatenate([part[k] for part in parts]) for k in whole}, whole)
    _equal(loader.eval_batch(step % 3), make().eval_batch(step % 3, np.arange(8)))


def test_schedule_counts_and_spread():
  owner, counts = batches.schedule([0.7, 0.2, 0.1], 1000)
  assert counts.tolist() == [700, 200, 100] and len(owner) == 1000
  np.testing.assert_array_equal(np.bincount(owner), counts)
  # spread evenly: every window of 10 consecutive positions holds 7 / 2 / 1 (+-1)
  for start in range(0, 990):
    window = np.bincount(owner[start : start + 10], minlength=3)
    assert all(abs(window[i] - 10 * w) <= 1 for i, w in enumerate((0.7, 0.2, 0.1)))
  # weights are normalised; rounding by largest remainders keeps the period's length
  _, counts = batches.schedule([1, 1, 1], 100)
  assert counts.sum() == 100 and sorted(counts.tolist()) == [33, 33, 34]


def test_mixture_proportions_order_and_epochs():
  mix = _mixture()
  owner, local = mix.locate(np.arange(5000))
  assert abs((owner == 0).mean() - 0.7) < 1e-3
  for i in range(2):  # each dataset's examples are taken in order 0, 1, 2, ... without gaps
    np.testing.assert_array_equal(local[owner == i], np.arange((owner == i).sum()))
  np.testing.assert_array_equal(mix.seen(5000), np.bincount(owner))
  np.testing.assert_array_equal(mix.seen(1234), np.bincount(owner[:1234]))
  # every batch of 8 carries 5 or 6 rows of 'a' (0.7 * 8 = 5.6)
  for step in range(50):
    rows = mix.batch(step)["inputs"][:, 0]
    assert 5 <= (rows < 100_000).sum() <= 6
  # per-dataset epochs: 'a' has 99 windows, 'b' 29 (shuffled windows keep slack)
  a, b = mix.datasets
  epochs = mix.epochs(100)
  assert epochs["a"] == pytest.approx(mix.seen(800)[0] / a.num_examples)
  assert epochs["b"] == pytest.approx(mix.seen(800)[1] / b.num_examples)
  assert mix.epoch_of(100) == max(epochs.values()) == epochs["b"]
  # rows of 'b' come from its own stream and its own order: a full epoch of 'b' sees each
  # window exactly once
  firsts = []
  step = 0
  while len(firsts) < b.num_examples:
    batch = mix.batch(step)["inputs"][:, 0]
    firsts.extend(batch[batch >= 100_000].tolist())
    step += 1
  assert len(set(firsts[: b.num_examples])) == b.num_examples


def test_mixture_batches_are_deterministic():
  _equal(_mixture().batch(17), _mixture().batch(17))
  walked = _mixture()
  for step in range(18):
    last = walked.batch(step)
  _equal(_mixture().batch(17), last)


def test_mixture_errors():
  with pytest.raises(
    sources.DataError, match=r"config\.data\.mixture: weights of \['b'\] are below 1/1000"
  ):
    batches.Mixture({"a": _windows(100, 0), "b": _windows(100, 1)}, {"a": 1.0, "b": 1e-5}, 8)
  with pytest.raises(sources.DataError, match=r"different structure"):
    batches.Mixture(
      {"a": _windows(1000, 0), "b": _windows(1000, 1, document_mask=True)}, {"a": 0.5, "b": 0.5}, 8
    ).batch(0)
