"""Step-indexed global batches, and deterministic mixtures of several datasets.

Every loader is a `StepIndexed`: row r of the global batch of step s is example
s * batch_size + r of an endless, epoch-wrapping sequence that is a pure function of the seed.
A process asks only for its own rows (`batch(step, rows)`), so the global batches are the same
whatever the number of processes or devices, and a resumed run continues without replay.

A `Mixture` interleaves several loaders by weight. Its sequence is periodic: each period of
`period` examples holds round(weight * period) examples of each dataset (largest remainders),
spread evenly through the period, so every batch carries close to the weights' proportions and
example g maps to (dataset, index) in O(1). Each dataset keeps its own epochs and order.
"""

import numpy as np

from input_pipeline.corpora import sources


def segments(starts):
  """Packed rows' segments from where each starts ([rows, length] bools, True at a segment's
  first position): positions counted from the segment's start, and segment ids from 1
  ({'positions', 'segment_ids'}, int32)."""
  idx = np.arange(starts.shape[1])
  first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
  return {
    "positions": (idx - first).astype(np.int32),
    "segment_ids": np.cumsum(starts, axis=1, dtype=np.int32) + 1,
  }


def per_epoch(indices, n, of_epoch):
  """Values for global example indices that run over epochs of n examples: index i is item
  i % n of the array `of_epoch(i // n)` (called once per epoch present)."""
  epochs, offsets = np.divmod(np.asarray(indices, np.int64), n)
  out = np.empty(len(offsets), np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = of_epoch(int(epoch))[offsets[sel]]
  return out


class StepIndexed:
  """Batches of `batch_size` rows from `examples(indices, stream, counter, rows)`.

  `examples` returns the batch dict for example indices (wrapping over epochs); `stream`
  (0 train, 1 eval), `counter` (step or eval batch) and `rows` (positions in the global batch)
  key any per-row randomness, such as dynamic masking.
  """

  batch_size: int
  num_examples: int
  note = ""  # anything worth a line in the run's log (e.g. documents longer than a window)

  def examples(self, indices, stream, counter, rows):
    raise NotImplementedError

  def per_example(self, predictions):
    """The evaluator's predictions of every row in order, as one per example (a loader that
    packs several examples a row maps them back)."""
    return predictions

  def _rows(self, rows):
    return np.arange(self.batch_size) if rows is None else np.asarray(rows, np.int64)

  def batch(self, step, rows=None):
    """Rows `rows` (default: all) of the training batch of `step`."""
    rows = self._rows(rows)
    return self.examples(step * self.batch_size + rows, 0, step, rows)

  def eval_batch(self, i, rows=None):
    """Rows of the i-th evaluation batch (examples in order, wrapping around a small split)."""
    rows = self._rows(rows)
    return self.examples(i * self.batch_size + rows, 1, i, rows)

  def epochs(self, step):
    """Epochs completed by the end of `step` - 1, per dataset ('' for a single one)."""
    return {"": step * self.batch_size / max(1, self.num_examples)}

  def epoch_of(self, step):
    return self.epochs(step)[""]


def schedule(weights, period):
  """The dataset of each position of one period, evenly interleaved by weight."""
  weights = np.asarray(weights, np.float64) / np.sum(weights)
  exact = weights * period
  counts = np.floor(exact).astype(np.int64)
  for i in np.argsort(-(exact - counts), kind="stable")[: period - counts.sum()]:
    counts[i] += 1
  # Slot j of dataset i sits at (j + 0.5) / counts[i] of the way through the period.
  ideal = np.concatenate([(np.arange(c) + 0.5) / c for c in counts if c])
  owner = np.concatenate([np.full(c, i) for i, c in enumerate(counts) if c])
  return owner[np.argsort(ideal, kind="stable")].astype(np.int64), counts


class Mixture(StepIndexed):
  """Several StepIndexed datasets interleaved by weight (see the module docstring)."""

  def __init__(self, datasets, weights, batch_size, period=1000):
    self.names = list(datasets)
    self.datasets = [datasets[n] for n in self.names]
    self.owner, self.counts = schedule([weights[n] for n in self.names], period)
    if (self.counts == 0).any():
      small = [n for n, c in zip(self.names, self.counts) if not c]
      raise sources.DataError(
        f"config.data.mixture: weights of {small} are below 1/{period} of the total; raise them"
      )
    self.period, self.batch_size = period, batch_size
    self.num_examples = sum(d.num_examples for d in self.datasets)
    # rank[p]: how many positions before p in the period belong to the same dataset.
    self.rank = np.zeros(period, np.int64)
    for i in range(len(self.names)):
      sel = self.owner == i
      self.rank[sel] = np.arange(sel.sum())

  def locate(self, indices):
    """Mixture example indices -> (dataset, that dataset's example index)."""
    q, p = np.divmod(np.asarray(indices, np.int64), self.period)
    owner = self.owner[p]
    return owner, q * self.counts[owner] + self.rank[p]

  def seen(self, n):
    """Examples of each dataset among the mixture's first n."""
    q, p = divmod(int(n), self.period)
    partial = np.bincount(self.owner[:p], minlength=len(self.names))
    return q * self.counts + partial

  def examples(self, indices, stream, counter, rows):
    owner, local = self.locate(indices)
    parts = {}
    for i, dataset in enumerate(self.datasets):
      sel = np.flatnonzero(owner == i)
      if len(sel):
        parts[i] = (sel, dataset.examples(local[sel], stream, counter, rows[sel]))
    first = next(iter(parts.values()))[1]
    out = {k: np.empty((len(owner),) + v.shape[1:], v.dtype) for k, v in first.items()}
    for sel, batch in parts.values():
      if set(batch) != set(out):
        raise sources.DataError("config.data.mixture: datasets give batches of different structure")
      for k, v in batch.items():
        out[k][sel] = v
    return out

  def epochs(self, step):
    seen = self.seen(step * self.batch_size)
    return {n: s / max(1, d.num_examples) for n, s, d in zip(self.names, seen, self.datasets)}

  def epoch_of(self, step):
    """The mixture's epoch: that of its most-repeated dataset."""
    return max(self.epochs(step).values())
