"""Packed causal-LM windows, indexed by step.

Documents are tokenized, joined with EOS into one stream and cut into windows of seq_len + 1
tokens (consecutive windows share one token, so every token is a target once; no padding).
The local batch of step s is a pure function of (seed, process, s): window order is a seeded
permutation per epoch, so a resumed run continues the exact same sequence of batches without
replaying anything. When shuffling, each epoch also shifts every window start by a seeded
offset in [0, seq_len), so repeated epochs see new windows rather than the same ones again.
"""
import dataclasses

import numpy as np

from input_pipeline import sources


def tokenize_stream(tok, texts, eos_id, chunk=1024):
  """Encodes texts in parallel chunks; returns (tokens, position-in-document) int32 arrays."""
  pieces, positions, buffer = [], [], []

  def flush():
    for enc in tok.encode_batch(buffer, add_special_tokens=False):
      ids = np.asarray(enc.ids + [eos_id], np.int32)
      pieces.append(ids)
      positions.append(np.arange(len(ids), dtype=np.int32))
    buffer.clear()

  for text in texts:
    buffer.append(text)
    if len(buffer) >= chunk:
      flush()
  flush()
  if not pieces:
    return np.zeros((0,), np.int32), np.zeros((0,), np.int32)
  return np.concatenate(pieces), np.concatenate(positions)


def per_epoch(indices, n, of_epoch):
  """Values for global example indices that run over epochs of n examples: index i is item
  i % n of the array `of_epoch(i // n)` (called once per epoch present)."""
  epochs, offsets = np.divmod(np.asarray(indices, np.int64), n)
  out = np.empty(len(offsets), np.int64)
  for epoch in np.unique(epochs):
    sel = epochs == epoch
    out[sel] = of_epoch(int(epoch))[offsets[sel]]
  return out


@dataclasses.dataclass
class PackedWindows:
  """Windows over one token stream; `batch(step)` gives this process's rows for that step."""
  tokens: np.ndarray
  doc_positions: np.ndarray
  seq_len: int
  batch_size: int       # rows per call (this process's share of the global batch)
  seed: int
  shuffle: bool
  document_mask: bool

  def __post_init__(self):
    # Shuffled windows keep seq_len - 1 tokens of slack for the per-epoch shift.
    slack = self.seq_len - 1 if self.shuffle else 0
    self.num_windows = max(0, (len(self.tokens) - 1 - slack) // self.seq_len)
    if self.shuffle and not self.num_windows:  # a tiny split: no room to shift, one window
      self.num_windows = max(0, (len(self.tokens) - 1) // self.seq_len)
    self._max_shift = len(self.tokens) - 1 - self.num_windows * self.seq_len + 1
    self._cached_epoch, self._starts = None, None

  def _starts_of(self, epoch):
    """Start offsets of the windows of `epoch`, in the order they are served."""
    if not self.shuffle:
      return np.arange(self.num_windows, dtype=np.int64) * self.seq_len
    if self._cached_epoch != epoch:
      rng = np.random.default_rng([*np.atleast_1d(self.seed), epoch])
      shift = rng.integers(min(self.seq_len, self._max_shift))
      self._starts = rng.permutation(self.num_windows).astype(np.int64) * self.seq_len + shift
      self._cached_epoch = epoch
    return self._starts

  def windows(self, indices):
    """Rows for global window indices (epochs wrap around, each with a fresh order)."""
    starts = per_epoch(indices, self.num_windows, self._starts_of)
    span = starts[:, None] + np.arange(self.seq_len + 1)
    window = self.tokens[span]
    batch = {"inputs": window[:, :-1], "targets": window[:, 1:]}
    if self.document_mask:
      # Positions count from the document's start, or from the window's start for a document
      # that began in an earlier window, so they never exceed seq_len.
      starts_doc = self.doc_positions[span[:, :-1]] == 0
      idx = np.arange(self.seq_len)
      first = np.maximum.accumulate(np.where(starts_doc, idx, 0), axis=1)
      batch["positions"] = (idx - first).astype(np.int32)
      batch["segment_ids"] = np.cumsum(starts_doc, axis=1, dtype=np.int32) + 1
    return batch

  @property
  def num_examples(self):
    return self.num_windows

  def batch(self, step):
    """This process's rows of the training batch of `step`."""
    return self.windows(step * self.batch_size + np.arange(self.batch_size))

  def eval_batch(self, i):
    """The i-th evaluation batch (windows in order, wrapping around a small split)."""
    return self.windows(i * self.batch_size + np.arange(self.batch_size))

  def epoch_of(self, step):
    return step * self.batch_size / max(1, self.num_windows)


def load_split(data, tok, split, *, batch_size, seq_len, seed, shuffle, shard, builder):
  """Tokenizes this process's shard of a split into PackedWindows."""
  eos_id = tok.token_to_id(data.tokenizer.eos_token)
  tokens, positions = tokenize_stream(tok, sources.texts(builder, split, data.text_key, shard), eos_id)
  windows = PackedWindows(tokens, positions, seq_len, batch_size, seed, shuffle, data.document_mask)
  if windows.num_windows == 0:
    raise sources.DataError(
        f"config.data: split {split!r} (process shard {shard[0]}/{shard[1]}) has {len(tokens)} "
        f"tokens, fewer than one window of seq_len+1={seq_len + 1}; add data or lower "
        "config.batch.seq_len")
  return windows
