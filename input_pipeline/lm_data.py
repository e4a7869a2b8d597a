"""Packed causal-LM windows over a token stream, indexed by step.

The stream is a prepared split (input_pipeline/corpora/tokenized.py): documents, each followed by EOS,
back to back. It is cut into windows of seq_len + 1 tokens (consecutive windows share one
token, so every token is a target once; no padding). Window order is a seeded permutation per
epoch, and each epoch also shifts every window start by a seeded offset in [0, seq_len), so
repeated epochs see new windows rather than the same ones again. Row r of the global batch of
step s is window s * batch_size + r of that sequence (input_pipeline/batches.py).
"""

import dataclasses

import ml_collections
import numpy as np

from input_pipeline import batches
from input_pipeline.corpora import sources, tokenized


def tokenize_stream(tok, texts, eos_id, chunk=1024):
  """Encodes texts as a prepared split holds them (each document followed by EOS), in memory;
  returns (tokens, position-in-document) int32 arrays. For tests and the on-the-fly benchmark."""
  chunks = list(tokenized.encode(tok, texts, "documents", eos_id, {}, chunk))
  if not chunks:
    return np.zeros((0,), np.int32), np.zeros((0,), np.int32)
  lengths = np.concatenate([doc_lengths for _, doc_lengths, _ in chunks])
  starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
  tokens = np.concatenate([t for t, _, _ in chunks]).astype(np.int32)
  return tokens, (np.arange(len(tokens)) - starts).astype(np.int32)


@dataclasses.dataclass
class PackedWindows(batches.StepIndexed):
  """Windows over one token stream (a TokenStream, or an array of tokens)."""

  stream: object
  seq_len: int
  batch_size: int  # rows of the global batch
  seed: object
  shuffle: bool
  document_mask: bool
  eos_id: int = -1  # document_mask: a document starts after each EOS

  def __post_init__(self):
    if isinstance(self.stream, np.ndarray):
      self.stream = tokenized.TokenStream([self.stream])
    n = len(self.stream)
    # Shuffled windows keep seq_len - 1 tokens of slack for the per-epoch shift.
    slack = self.seq_len - 1 if self.shuffle else 0
    self.num_windows = max(0, (n - 1 - slack) // self.seq_len)
    if self.shuffle and not self.num_windows:  # a tiny split: no room to shift, one window
      self.num_windows = max(0, (n - 1) // self.seq_len)
    self.num_examples = self.num_windows
    self._max_shift = n - 1 - self.num_windows * self.seq_len + 1
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
    """Rows for window indices (epochs wrap around, each with a fresh order)."""
    starts = batches.per_epoch(indices, self.num_windows, self._starts_of)
    window = self.stream.spans(starts, self.seq_len + 1)
    batch = {"inputs": window[:, :-1], "targets": window[:, 1:]}
    if self.document_mask:
      # A document starts at the stream's start and after every EOS. Positions count from the
      # document's start, or from the window's start for a document that began in an earlier
      # window, so they never exceed seq_len.
      before = self.stream.spans(np.maximum(starts - 1, 0), 1)[:, 0]
      starts_doc = np.empty((len(starts), self.seq_len), bool)
      starts_doc[:, 0] = (starts == 0) | (before == self.eos_id)
      starts_doc[:, 1:] = window[:, : self.seq_len - 1] == self.eos_id
      batch.update(batches.segments(starts_doc))
    return batch

  def examples(self, indices, stream, counter, rows):
    del stream, counter, rows  # windows carry no per-step randomness
    return self.windows(indices)


def load(
  split: str,
  data: ml_collections.ConfigDict,
  *,
  batch_size: int,
  seq_len: int,
  seed: int,
  shuffle: bool,
  eos_id: int,
) -> PackedWindows:
  """PackedWindows over a prepared split (a tokenized.Tokenized in 'documents' mode)."""
  windows = PackedWindows(
    split.stream, seq_len, batch_size, seed, shuffle, data.document_mask, eos_id
  )
  if windows.num_windows == 0:
    raise sources.DataError(
      f"config.data: {split.summary()}: fewer than one window of seq_len+1={seq_len + 1} "
      "tokens; add data or lower config.batch.seq_len"
    )
  lengths = np.diff(split.document_offsets()) - 1
  longer = int((lengths > seq_len).sum())
  if longer:
    windows.note = f"{longer} documents longer than a window continue across windows"
  return windows
