"""Labelled data for fine-tuning: a task's examples -> fixed-length features, cached, by step.

A task family (GLUE classification, NER, QA) says how to read its examples from local files
or from a prepared tfds dataset, and how to encode them into rows of equal length (a
`TaskFormat`, given by its objective in pretrain/objectives/tasks.py). The examples of each split are
encoded once per tokenizer and settings and cached under <data_dir>/finetune/; `Features`
serves the rows step by step like every other loader (input_pipeline/batches.py), so a
resumed fine-tuning run sees exactly the batches it would have seen.

Packing (`config.data.pack_examples`): several examples a row instead of one. Each keeps its
own tokens, type ids and labels; `segment_ids` keep attention within it, `positions` restart
at its first token, and `cls_positions` [rows, segments] say where each begins (its [CLS]), so
the heads read each example at its own positions (pretrain/objectives/tasks.py). Only the
rows change: the examples, their encoding and the cache are the same, and evaluation maps the
predictions back to one per example (`Features.per_example`), so the metrics are computed as
without packing.

Where the data comes from: `config.data.files` = 'TRAIN,EVAL' (local files in the task's
usual format), else the tfds dataset `config.data.dataset` prepared in `config.data.data_dir`
(splits `config.data.train_split` and `config.data.eval_split`).
"""

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import batches, tokenizer
from input_pipeline.corpora import sources, tokenized

DataError = sources.DataError
FORMAT = 1  # bump when the encoding of any task changes: old caches are then ignored


@dataclasses.dataclass(frozen=True)
class TaskFormat:
  """How one family of tasks reads and encodes its data."""

  read_file: Callable  # (path, data section) -> list of examples (tfds schema)
  from_tfds: Callable  # (rows as tfds yields them, data section, tfds info) -> examples
  encode: Callable  # (examples, tok, data section, seq_len, train) -> (arrays, notes)
  batch_keys: tuple  # the arrays that go into a batch (the rest serve scoring)
  texts: Callable  # examples -> iterable of strings (to train a tokenizer on)
  position_keys: tuple = ()  # per-example batch keys that are positions in the row (spans)


@dataclasses.dataclass(frozen=True)
class Packing:
  """Where each example sits in the packed rows ([n] each), and the rows' batch arrays."""

  row: np.ndarray
  start: np.ndarray  # the example's first position in its row
  slot: np.ndarray  # its number among the row's examples
  length: np.ndarray  # its tokens ([CLS] to the last [SEP])
  arrays: dict  # the batch keys as packed rows, plus the segments' arrays

  @property
  def segments(self):
    return self.arrays["cls_positions"].shape[1]


PACK_FILL = {"labels": -1}  # a per-position array's value past the examples (else 0)


def pack_layout(lengths, order, seq_len):
  """(row, start, slot) of each example, placed in `order`, each in the current row while it
  fits (next fit: rows keep the order, so a shuffled order gives shuffled rows)."""
  row, start, slot = (np.empty(len(lengths), np.int64) for _ in range(3))
  r, used, k = 0, 0, 0
  for i in order:
    if used + lengths[i] > seq_len:
      r, used, k = r + 1, 0, 0
    row[i], start[i], slot[i] = r, used, k
    used, k = used + lengths[i], k + 1
  return row, start, slot


def pack(arrays, keys, order, seq_len, position_keys=()):
  """`arrays`' batch `keys` packed several examples a row, in `order`.

  Per-position arrays [n, seq_len] keep each example's tokens at its place in the row;
  per-example ones [n] become [rows, segments], with `position_keys` (span starts and ends)
  moved to the row's positions. Added: `segment_ids` and `positions` (input_pipeline/
  batches.py's, as the pretraining rows'), `cls_positions` and `segment_weights` (1 for an
  example, 0 for an empty slot) [rows, segments]."""
  length = arrays["input_mask"].sum(1).astype(np.int64)
  row, start, slot = pack_layout(length, order, seq_len)
  shape = (int(row.max()) + 1, int(slot.max()) + 1)
  ex, col = np.nonzero(np.arange(seq_len)[None] < length[:, None])
  out = {}
  for k in keys:
    a = arrays[k]
    if a.ndim == 2:
      out[k] = np.full((shape[0], seq_len), PACK_FILL.get(k, 0), a.dtype)
      out[k][row[ex], start[ex] + col] = a[ex, col]
    else:
      out[k] = np.zeros(shape, a.dtype)
      out[k][row, slot] = a + start if k in position_keys else a
  starts = np.zeros((shape[0], seq_len), bool)
  starts[row, start] = start > 0  # (a row's first segment is segment 1 unmarked)
  out.update(batches.segments(starts))
  out["cls_positions"] = np.zeros(shape, np.int32)
  out["cls_positions"][row, slot] = start
  out["segment_weights"] = np.zeros(shape, np.float32)
  out["segment_weights"][row, slot] = 1.0
  return Packing(row, start, slot, length, out)


def unpack(predictions, packing, seq_len):
  """Predictions of packed rows -> one per example, as without packing: per-example ones
  [rows, segments] -> [n]; per-position ones [rows, seq_len] -> [n, seq_len], each example's
  positions first, then -1 (integers) or the lowest float. (segments < seq_len: an example
  holds at least 2 tokens.)"""
  p = packing
  at = p.start[:, None] + np.arange(seq_len)[None]
  inside = np.arange(seq_len)[None] < p.length[:, None]

  def one(x):
    x = np.asarray(x)
    if x.shape[1] == p.segments:
      return x[p.row, p.slot]
    fill = np.finfo(x.dtype).min if x.dtype.kind == "f" else -1
    picked = x[p.row[:, None], np.minimum(at, seq_len - 1)]
    return np.where(inside.reshape(inside.shape + (1,) * (x.ndim - 2)), picked, fill)

  return {k: one(v) for k, v in predictions.items()}


class Features(batches.StepIndexed):
  """Rows of encoded examples (one per example, or per window of a long one; or several a row,
  `packing`), served by step.

  Training batches take a fresh seeded permutation each epoch; evaluation reads in order.
  `source` holds the examples and `arrays` every encoded array, for scoring predictions.
  """

  def __init__(self, arrays, source, keys, *, data, batch_size, seed, shuffle, split, packing=None):
    self.arrays, self.source, self.keys, self.split = arrays, source, keys, split
    self.data = data  # config.data: the task and its settings
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.packing = packing
    self.rows = arrays if packing is None else packing.arrays
    if packing is not None:
      self.keys = tuple(packing.arrays)
    self.num_examples = len(self.rows[keys[0]])  # rows
    self._order = {}

  def _order_of(self, epoch):
    if not self.shuffle:
      return np.arange(self.num_examples)
    if epoch not in self._order:
      self._order = {
        epoch: np.random.default_rng([*np.atleast_1d(self.seed), epoch]).permutation(
          self.num_examples
        )
      }
    return self._order[epoch]

  def examples(self, indices, stream, counter, rows):
    del stream, counter, rows  # no per-step randomness
    idx = batches.per_epoch(indices, self.num_examples, self._order_of)
    out = {k: self.rows[k][idx] for k in self.keys}
    out["example_weights"] = np.ones(len(idx), np.float32)
    return out

  def per_example(self, predictions):
    """The evaluator's predictions of every row, as one per example."""
    if self.packing is None:
      return predictions
    return unpack(predictions, self.packing, self.arrays["input_mask"].shape[1])


def _file_identity(path):
  stat = os.stat(path)
  return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def read_split(data, fmt, which):
  """The examples of the train (which=0) or eval (which=1) split, and their identity (what
  the cache is keyed by)."""
  if data.files:
    files = [f.strip() for f in data.files.split(",") if f.strip()]
    if len(files) < 2:
      raise DataError(
        f"config.data.files: {data.files!r}; give the training and evaluation "
        "files, comma-separated: TRAIN,EVAL"
      )
    path = files[which]
    if not os.path.isfile(path):
      raise DataError(f"config.data.files: {path!r} is not a file")
    return fmt.read_file(path, data), _file_identity(path)
  split = (data.train_split, data.eval_split)[which]
  b = sources.builder(data)
  if split.split("[")[0] not in b.info.splits:
    raise DataError(
      f"config.data: split {split!r} is not in {b.name} (has "
      f"{', '.join(b.info.splits)}); set config.data.train_split / eval_split"
    )
  if b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    rows = list(b.as_data_source(split=split))
  else:
    rows = list(tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)))
  return fmt.from_tfds(rows, data, b.info), [b.info.full_name, split]


def cache_path(data, identity, tok, seq_len, train):
  settings = {
    k: v
    for k, v in data.to_dict().items()
    if k not in ("data_dir", "cache_dir", "shuffle", "tokenizer", "mixture", "pack_examples")
  }
  key = json.dumps(
    [FORMAT, identity, tokenizer.identity(tok), seq_len, train, settings],
    sort_keys=True,
    default=str,
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return os.path.join(data.data_dir, "finetune", f"{data.task}-{digest}.npz")


def encode_cached(examples, identity, fmt, tok, data, seq_len, train):
  """(arrays, notes) of a split, from the cache or encoded now (and cached)."""
  path = cache_path(data, identity, tok, seq_len, train)
  if os.path.exists(path):
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files if k != "_notes"}
      notes = [str(n) for n in f["_notes"]]
    return arrays, notes
  arrays, notes = fmt.encode(examples, tok, data, seq_len, train)
  os.makedirs(os.path.dirname(path), exist_ok=True)

  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, _notes=np.asarray(notes, dtype=str), **arrays)

  tokenized.write_atomic(path, write)
  return arrays, notes


def task_tokenizer(config, train_texts):
  """config.data.tokenizer (a trained kind is trained on the task's training text); the
  trainer passes a fine-tuning run config.init_from's own tokenizer instead."""
  return tokenizer.get_tokenizer(config.data.tokenizer, config.data.data_dir, train_texts)


def _packing(config, fmt, arrays, train):
  """The split packed (config.data.pack_examples), in a seeded random order for training (its
  rows are then shuffled each epoch like unpacked ones), else in order; or None."""
  if not config.data.get("pack_examples", False):
    return None
  n = len(arrays["input_mask"])
  shuffled = train and config.data.shuffle
  order = np.random.default_rng([config.seed, 1]).permutation(n) if shuffled else np.arange(n)
  return pack(arrays, fmt.batch_keys, order, config.batch.seq_len, fmt.position_keys)


def _packing_note(packing, seq_len):
  """Examples a row and the share of padding, packed against one example a row."""
  real, n = int(packing.length.sum()), len(packing.length)
  rows = len(packing.arrays["cls_positions"])
  return (
    f"packed {n / rows:.1f} examples a row (at most {packing.segments}): "
    f"{1 - real / (rows * seq_len):.1%} padding, against {1 - real / (n * seq_len):.1%} one a row"
  )


def load(config, fmt, tok=None, train=True):
  """(tokenizer, train Features or None, {'': eval Features}, notes for the log)."""
  data, seq_len = config.data, config.batch.seq_len
  which = (0, 1) if train else (1,)
  read = {w: read_split(data, fmt, w) for w in which}
  if tok is None:
    train_split = read[0] if 0 in read else read_split(data, fmt, 0)
    tok = task_tokenizer(config, lambda: fmt.texts(train_split[0]))
  tokenizer.check_bert_specials(tok)
  loaders, notes = {}, []
  for w in which:
    examples, identity = read[w]
    if not examples:
      raise DataError(f"config.data: the {('training', 'evaluation')[w]} split is empty")
    arrays, split_notes = encode_cached(examples, identity, fmt, tok, data, seq_len, w == 0)
    name = ("train", "eval")[w]
    packing = _packing(config, fmt, arrays, w == 0)
    loaders[w] = Features(
      arrays,
      examples,
      fmt.batch_keys,
      data=data,
      batch_size=config.batch.size,
      seed=[config.seed, 0],
      shuffle=w == 0 and data.shuffle,
      split=name,
      packing=packing,
    )
    rows = loaders[w].num_examples
    if packing is not None:
      split_notes = [*split_notes, _packing_note(packing, seq_len)]
    warnings = [n for n in split_notes if n.startswith("warning:")]
    notes.append(
      f"data {data.task} {name}: {len(examples):,} examples, {rows:,} rows of "
      f"{seq_len} tokens" + "".join(f"; {n}" for n in split_notes if n not in warnings)
    )
    notes.extend(warnings)  # each on a line of its own
  return tok, loaders.get(0), {"": loaders[1]}, notes
