"""Labelled data for fine-tuning: a task's examples -> fixed-length features, cached, by step.

A task family (GLUE classification, NER, QA) says how to read its examples from local files
or from a prepared tfds dataset, and how to encode them into rows of equal length (a
`TaskFormat`, given by its objective in pretrain/objectives/tasks.py). The examples of each split are
encoded once per tokenizer and settings and cached under <data_dir>/finetune/; `Features`
serves the rows step by step like every other loader (input_pipeline/batches.py), so a
resumed fine-tuning run sees exactly the batches it would have seen.

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


class Features(batches.StepIndexed):
  """Rows of encoded examples (one per example, or per window of a long one), served by step.

  Training batches take a fresh seeded permutation each epoch; evaluation reads in order.
  `source` holds the examples and `arrays` every encoded array, for scoring predictions.
  """

  def __init__(self, arrays, source, keys, *, data, batch_size, seed, shuffle, split):
    self.arrays, self.source, self.keys, self.split = arrays, source, keys, split
    self.data = data  # config.data: the task and its settings
    self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
    self.num_examples = len(arrays[keys[0]])
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
    out = {k: self.arrays[k][idx] for k in self.keys}
    out["example_weights"] = np.ones(len(idx), np.float32)
    return out


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
    if k not in ("data_dir", "cache_dir", "shuffle", "tokenizer", "mixture")
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
    loaders[w] = Features(
      arrays,
      examples,
      fmt.batch_keys,
      data=data,
      batch_size=config.batch.size,
      seed=[config.seed, 0],
      shuffle=w == 0 and data.shuffle,
      split=name,
    )
    rows = loaders[w].num_examples
    warnings = [n for n in split_notes if n.startswith("warning:")]
    notes.append(
      f"data {data.task} {name}: {len(examples):,} examples, {rows:,} rows of "
      f"{seq_len} tokens" + "".join(f"; {n}" for n in split_notes if n not in warnings)
    )
    notes.extend(warnings)  # each on a line of its own
  return tok, loaders.get(0), {"": loaders[1]}, notes
