"""GLUE sentence(-pair) classification and STS-B regression: tasks, readers and encoding.

Examples follow the tfds `glue/<task>` schema whichever way they come in: the task's text
features (str), "label" (int class index; float score for stsb; -1 where a split has no labels,
as in the test files) and "idx" (the row number). `read_tsv` reads GLUE's original TSV files
(csv with QUOTE_NONE: the files contain unbalanced quotes), `from_tfds` normalises examples as
tfds yields them, and `encode` turns examples into BERT's [CLS] a [SEP] (b [SEP]) rows.
"""

import csv
import dataclasses
import math
import sys

import numpy as np

from input_pipeline import tokenizer
from input_pipeline.corpora import sources

DataError = sources.DataError

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a few GLUE rows exceed csv's 128 KiB default


@dataclasses.dataclass(frozen=True)
class Tsv:
  """How to read a task's original GLUE TSV file.

  Attributes:
    texts: the column of each text, in the order of `Task.text_keys`: a header name, or an index
      where the file has no header.
    label: the label's column (header name or index); a headed file without it is unlabelled.
    header: whether the first line names the columns.
    names: whether the labels are written as names ("entailment") rather than indices ("1").
    label_last: the label is each row's last field (its header name must be present).
  """

  texts: tuple
  label: object
  header: bool = True
  names: bool = False
  label_last: bool = False


@dataclasses.dataclass(frozen=True)
class Task:
  """One GLUE task.

  Attributes:
    name: the task's name, as in tfds `glue/<name>`.
    text_keys: tfds feature names of the text(s): one for single-sentence tasks, two for pairs.
    num_labels: number of classes; 1 for regression (stsb).
    metrics: metric names to report ("accuracy", "f1", "matthews", "pearson", "spearman").
    eval_split: the tfds split to evaluate on.
    tsv: the layout of the original TSV files.
    label_names: the class names as in tfds (empty for regression).
  """

  name: str
  text_keys: tuple
  num_labels: int
  metrics: tuple
  eval_split: str
  tsv: Tsv
  label_names: tuple = ()

  @property
  def is_pair(self):
    return len(self.text_keys) == 2

  @property
  def is_regression(self):
    return self.num_labels == 1


_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "neutral", "contradiction")
_ENTAIL = ("entailment", "not_entailment")

TASKS = {
  t.name: t
  for t in (
    Task(
      "cola",
      ("sentence",),
      2,
      ("matthews",),
      "validation",
      Tsv(texts=(3,), label=1, header=False),
      ("unacceptable", "acceptable"),
    ),
    Task(
      "sst2",
      ("sentence",),
      2,
      ("accuracy",),
      "validation",
      Tsv(("sentence",), "label"),
      ("negative", "positive"),
    ),
    Task(
      "mrpc",
      _PAIR,
      2,
      ("accuracy", "f1"),
      "validation",
      Tsv(("#1 String", "#2 String"), "Quality"),
      ("not_equivalent", "equivalent"),
    ),
    Task(
      "qqp",
      ("question1", "question2"),
      2,
      ("accuracy", "f1"),
      "validation",
      Tsv(("question1", "question2"), "is_duplicate"),
      ("not_duplicate", "duplicate"),
    ),
    Task(
      "stsb", _PAIR, 1, ("pearson", "spearman"), "validation", Tsv(_PAIR, "score", label_last=True)
    ),
    Task(
      "mnli",
      ("premise", "hypothesis"),
      3,
      ("accuracy",),
      "validation_matched",
      Tsv(_PAIR, "gold_label", names=True, label_last=True),
      _NLI,
    ),
    Task(
      "qnli",
      ("question", "sentence"),
      2,
      ("accuracy",),
      "validation",
      Tsv(("question", "sentence"), "label", names=True),
      _ENTAIL,
    ),
    Task("rte", _PAIR, 2, ("accuracy",), "validation", Tsv(_PAIR, "label", names=True), _ENTAIL),
    Task(
      "wnli",
      _PAIR,
      2,
      ("accuracy",),
      "validation",
      Tsv(_PAIR, "label"),
      ("not_entailment", "entailment"),
    ),
    Task(
      "ax",
      ("premise", "hypothesis"),
      3,
      ("accuracy",),
      "test",
      Tsv(_PAIR, "label", names=True),
      _NLI,
    ),
  )
}

# Every text column name of any task: to tell "a pair task read from a one-text file" apart.
_TEXT_COLUMNS = frozenset(c for t in TASKS.values() for c in t.tsv.texts if isinstance(c, str))
STSB_RANGE = (0.0, 5.0)


def get_task(name):
  """The Task called `name`; a one-line error naming config.data.task otherwise."""
  if name not in TASKS:
    raise DataError(f"config.data.task: unknown GLUE task {name!r}; use one of {', '.join(TASKS)}")
  return TASKS[name]


# ----------------------------------------------------------------------------- labels


def _label_set(task):
  if task.tsv.names:
    return ", ".join(task.label_names)
  return ", ".join(str(i) for i in range(task.num_labels))


def _parse_label(text, task, where):
  """A TSV label field -> int class index (float score for stsb); `where` prefixes errors."""
  text = text.strip()
  if task.is_regression:
    try:
      score = float(text)
    except ValueError:
      score = math.nan
    if not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
      raise DataError(
        f"{where}: label {text!r} is not a number in [0, 5] ({task.name}); "
        "fix the file or pick the right task"
      )
    return score
  allowed = task.label_names if task.tsv.names else [str(i) for i in range(task.num_labels)]
  if text not in allowed:
    raise DataError(
      f"{where}: label {text!r} is not one of {_label_set(task)} ({task.name}); "
      "fix the file or pick the right task"
    )
  return list(allowed).index(text)


def _check_label(label, task, where):
  """A label as tfds gives it (-1: unlabelled) -> python int/float, checked."""
  if task.is_regression:
    score = float(label)
    if score != -1 and not STSB_RANGE[0] <= score <= STSB_RANGE[1]:
      raise DataError(
        f"{where}: label {score} is not in [0, 5] or -1 ({task.name}); pick the right task"
      )
    return score
  index = int(label)
  if index != -1 and not 0 <= index < task.num_labels:
    raise DataError(
      f"{where}: label {index} is not one of "
      f"{', '.join(str(i) for i in range(task.num_labels))} or -1 ({task.name}); "
      "pick the right task"
    )
  return index


# ----------------------------------------------------------------------------- TSV files


def _read_rows(path):
  """(1-based line number, fields) of each non-blank line of a TSV file."""
  try:
    with open(path, encoding="utf-8-sig", newline="") as f:
      reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
      return [(reader.line_num, row) for row in reader if any(field.strip() for field in row)]
  except OSError as e:
    raise DataError(
      f"config.data.files: cannot read {path} ({e.strerror}); give an existing GLUE .tsv file"
    ) from None
  except UnicodeDecodeError:
    message = f"config.data.files: {path} is not UTF-8 text; give a GLUE .tsv file"
    raise DataError(message) from None


def _column(header, name, task, path, line):
  if name in header:
    return header.index(name)
  known = [c for c in header if c in _TEXT_COLUMNS]
  if task.is_pair and len(known) == 1:
    raise DataError(
      f"config.data.task: {task.name} is a sentence-pair task but {path} has one "
      f"text column ({known[0]!r}); pick a single-sentence task or a pair file"
    )
  raise DataError(
    f"config.data.files: {path} line {line}: the header has no column {name!r} that "
    f"{task.name} reads (it has {', '.join(header)}); fix the file or pick the "
    "right task"
  )


def _layout(rows, task, path):
  """(data rows, text column indices, label column index or None, label-is-last)."""
  tsv = task.tsv
  first = [field.strip() for field in rows[0][1]]
  if tsv.header or all(name in first for name in task.text_keys):
    # A headerless layout's test file (CoLA's) has a header naming the tfds text features.
    names = tsv.texts if tsv.header else task.text_keys
    texts = tuple(_column(first, name, task, path, rows[0][0]) for name in names)
    has_label = tsv.header and tsv.label in first
    label = first.index(tsv.label) if has_label else None
    return rows[1:], texts, label, has_label and tsv.label_last
  return rows, tsv.texts, tsv.label, False


def _example(row, texts, label, last, task, where):
  needed = max(texts) + (2 if last else 1)
  if label is not None and not last:
    needed = max(needed, label + 1)
  if len(row) < needed:
    raise DataError(
      f"{where}: the row has {len(row)} of the {needed} tab-separated columns "
      f"{task.name} reads; fix the file or pick the right task"
    )
  example = {key: row[i] for key, i in zip(task.text_keys, texts)}
  if label is None:
    example["label"] = -1.0 if task.is_regression else -1
  else:
    example["label"] = _parse_label(row[-1] if last else row[label], task, where)
  return example


def read_tsv(path, task):
  """Reads one of GLUE's original TSV files (train/dev/test) into the tfds schema.

  Args:
    path: the .tsv file.
    task: a Task, or a task name.

  Returns:
    A list of dicts: the task's text keys (str), "label" (int class index, float for stsb,
    -1 in files without labels) and "idx" (int, the data row number from 0).
  """
  task = get_task(task) if isinstance(task, str) else task
  rows = _read_rows(path)
  if not rows:
    raise DataError(f"config.data.files: {path} is empty; give a GLUE .tsv file")
  rows, texts, label, last = _layout(rows, task, path)
  examples = []
  for idx, (line, row) in enumerate(rows):
    example = _example(row, texts, label, last, task, f"config.data.files: {path} line {line}")
    example["idx"] = idx
    examples.append(example)
  return examples


# ----------------------------------------------------------------------------- tfds


def _text(value):
  if isinstance(value, np.ndarray):
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def from_tfds(rows, task):
  """Examples as tfds `glue/<task>` yields them (bytes, numpy scalars) -> the same schema as
  `read_tsv` (str, python int/float), with the same label checks."""
  task = get_task(task) if isinstance(task, str) else task
  examples = []
  for n, row in enumerate(rows):
    missing = [k for k in task.text_keys + ("label",) if k not in row]
    if missing:
      raise DataError(
        f"config.data.task: the tfds examples have no {missing[0]!r} feature "
        f"({task.name} needs {', '.join(task.text_keys)}, label); pick the right "
        "task"
      )
    idx = int(row["idx"]) if "idx" in row else n
    example = {key: _text(row[key]) for key in task.text_keys}
    example["label"] = _check_label(
      row["label"], task, f"config.data.task: glue/{task.name} example idx {idx}"
    )
    example["idx"] = idx
    examples.append(example)
  return examples


# ----------------------------------------------------------------------------- encoding


def truncate_pair(a, b, max_tokens):
  """Lengths of a and b after 'longest_first' (HF's Python tokenizers, BERT's
  _truncate_seq_pair): one token at a time from the end of the longer (b on ties) until they
  fit in `max_tokens`."""
  la, lb = len(a), len(b)
  while la + lb > max_tokens:
    if la > lb:
      la -= 1
    else:
      lb -= 1
  return la, lb


def _token_ids(tok, examples, key):
  texts = [example[key] for example in examples]
  return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


def _row(specials, a, b, seq_len):
  """Token ids and type ids of [CLS] a [SEP] (b [SEP]), and whether anything was cut."""
  if b is None:
    la, lb = min(len(a), seq_len - 2), 0
  else:
    la, lb = truncate_pair(a, b, seq_len - 3)
  cls, sep = specials["[CLS]"], specials["[SEP]"]
  ids = [cls] + list(a[:la]) + [sep]
  types = [0] * len(ids)
  if b is not None:
    ids += list(b[:lb]) + [sep]
    types += [1] * (lb + 1)
  return ids, types, la < len(a) or (b is not None and lb < len(b))


def encode(examples, task, tok, seq_len):
  """BERT inputs for sentence(-pair) classification or regression.

  Args:
    examples: dicts in the tfds schema (from `read_tsv` or `from_tfds`).
    task: a Task, or a task name.
    tok: a `tokenizers.Tokenizer` with BERT's special tokens.
    seq_len: the row length (config.batch.seq_len).

  Returns:
    (arrays, truncated): arrays holds "inputs", "type_ids", "input_mask" (int32 [n, seq_len];
    [CLS] a [SEP] (b [SEP]) then [PAD]; type 1 for b and its [SEP]) and "labels" (int32 [n],
    float32 [n] for stsb); `truncated` counts the examples that lost tokens to the window.
  """
  task = get_task(task) if isinstance(task, str) else task
  if seq_len < (3 if task.is_pair else 2) + 1:
    raise DataError(
      f"config.batch.seq_len: {seq_len} leaves no room for text after the special "
      f"tokens ({task.name}); use a longer sequence"
    )
  specials = tokenizer.check_bert_specials(tok)
  first = _token_ids(tok, examples, task.text_keys[0])
  second = _token_ids(tok, examples, task.text_keys[1]) if task.is_pair else [None] * len(first)
  n = len(examples)
  inputs = np.full((n, seq_len), specials["[PAD]"], np.int32)
  type_ids = np.zeros((n, seq_len), np.int32)
  mask = np.zeros((n, seq_len), np.int32)
  truncated = 0
  for i, (a, b) in enumerate(zip(first, second)):
    ids, types, cut = _row(specials, a, b, seq_len)
    inputs[i, : len(ids)], type_ids[i, : len(ids)], mask[i, : len(ids)] = ids, types, 1
    truncated += cut
  labels = np.array(
    [e["label"] for e in examples], np.float32 if task.is_regression else np.int32
  ).reshape(n)
  return dict(inputs=inputs, type_ids=type_ids, input_mask=mask, labels=labels), truncated
