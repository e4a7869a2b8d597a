"""Named-entity recognition data (CoNLL-2003 style): reading, encoding, and mapping back.

Sentences follow tfds `conll2003`'s schema, {"tokens": [str], "ner_tags": [...]}, with the
tags kept as strings here (`tags_of` gives the label list, "O" first). `encode` splits words
into word pieces and puts each word's label on its FIRST sub-token only; every other position
(later sub-tokens, [CLS], [SEP], padding) has label -1, which the loss ignores. "word_index"
remembers which word each first sub-token starts, so `word_predictions` can give one tag per
word again (words cut off by the window get "O").
"""

import re

import numpy as np

from input_pipeline import tokenizer
from input_pipeline.corpora import sources

DataError = sources.DataError

DOCSTART = "-DOCSTART-"
IGNORE = -1
_TAG = re.compile(r"O|[BIES]-\S+")


# ----------------------------------------------------------------------------- reading


def _lines(path):
  """(1-based line number, text) of each line of a UTF-8 file."""
  try:
    with open(path, "rb") as f:
      raw = f.read().splitlines()
  except OSError as e:
    raise DataError(
      f"config.data.files: cannot read {path} ({e.strerror}); give an existing CoNLL file"
    ) from None
  for number, line in enumerate(raw, 1):
    try:
      yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
      raise DataError(
        f"config.data.files: {path} line {number} is not UTF-8 text; convert the file to UTF-8"
      ) from None


def _parse(fields, path, number):
  """(word, tag) of one token line; a one-line error for a malformed line."""
  where = f"config.data.files: {path} line {number}"
  if len(fields) < 2:
    raise DataError(
      f"{where}: {' '.join(fields)!r} has one column; give the word and its NER "
      "tag (last column), separated by whitespace"
    )
  if not _TAG.fullmatch(fields[-1]):
    raise DataError(
      f"{where}: tag {fields[-1]!r} is not O or B-/I-/E-/S-<type>; the NER tag "
      "must be the last column"
    )
  return fields[0], fields[-1]


def read_conll(path):
  """Reads a CoNLL file: one token a line (the word first, the NER tag last), blank lines
  between sentences, "-DOCSTART-" lines skipped.

  Returns:
    A list of {"tokens": [str], "ner_tags": [str]}, one per sentence.
  """
  sentences, tokens, tags = [], [], []
  for number, line in _lines(path):
    fields = line.split()
    if not fields or fields[0] == DOCSTART:
      if tokens:
        sentences.append({"tokens": tokens, "ner_tags": tags})
      tokens, tags = [], []
      continue
    word, tag = _parse(fields, path, number)
    tokens.append(word)
    tags.append(tag)
  if tokens:
    sentences.append({"tokens": tokens, "ner_tags": tags})
  return sentences


def tags_of(examples):
  """The sorted tags of `examples`, with "O" first (always present)."""
  found = {tag for example in examples for tag in example["ner_tags"]}
  return ["O"] + sorted(found - {"O"})


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def from_tfds(rows, tag_names):
  """tfds conll2003 rows (tokens as bytes, "ner" as class ids) -> read_conll's schema.

  Args:
    rows: dicts with "tokens" and "ner" (or "ner_tags", as in HF datasets).
    tag_names: the ClassLabel names of the ner feature, indexed by id.
  """
  examples = []
  for n, row in enumerate(rows):
    ids = row["ner"] if "ner" in row else row["ner_tags"]
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    bad = [i for i in ids if not 0 <= i < len(tag_names)]
    if bad:
      raise DataError(
        f"config.data.dataset: example {n} has ner id {bad[0]}, but there are "
        f"{len(tag_names)} tag names; pass the dataset's own ner names"
      )
    tokens = [_text(t) for t in np.asarray(row["tokens"], dtype=object).reshape(-1)]
    examples.append({"tokens": tokens, "ner_tags": [tag_names[i] for i in ids]})
  return examples


# ----------------------------------------------------------------------------- encoding


def _label_index(example, n, label_ids):
  """The label id of each word; a one-line error for a tag the training set lacks."""
  out = []
  for word, tag in zip(example["tokens"], example["ner_tags"]):
    if tag not in label_ids:
      raise DataError(
        f"config.data.files: sentence {n + 1} (word {word!r}): tag {tag!r} is not in "
        f"the training set's tags ({', '.join(label_ids)}); fix the file or add "
        "the tag to the training data"
      )
    out.append(label_ids[tag])
  return out


def _fill(row, word_ids, ids, word_labels, arrays, specials, seq_len):
  """Writes one sentence's [CLS] sub-tokens [SEP] into row `row`; True if it was cut."""
  keep = min(len(ids), seq_len - 2)
  arrays["inputs"][row, 0] = specials["[CLS]"]
  arrays["inputs"][row, 1 : keep + 1] = ids[:keep]
  arrays["inputs"][row, keep + 1] = specials["[SEP]"]
  arrays["input_mask"][row, : keep + 2] = 1
  previous = None
  for pos, word in enumerate(word_ids[:keep], 1):
    if word is not None and word != previous:
      arrays["labels"][row, pos] = word_labels[word]
      arrays["word_index"][row, pos] = word
    previous = word
  return keep < len(ids)


def encode(examples, label_ids, tok, seq_len):
  """BERT inputs for token classification.

  Args:
    examples: {"tokens": [str], "ner_tags": [str]} sentences.
    label_ids: tag -> id (a list of tag names is taken as their order).
    tok: a `tokenizers.Tokenizer` with BERT's special tokens.
    seq_len: the row length (config.batch.seq_len).

  Returns:
    (arrays, truncated): int32 [n, seq_len] arrays "inputs" ([CLS] sub-tokens [SEP], [PAD]),
    "type_ids" (zeros), "input_mask", "labels" (the word's label id on its first sub-token,
    -1 elsewhere) and "word_index" (the word number on first sub-tokens, -1 elsewhere); and
    the number of sentences cut off by the window.
  """
  if not isinstance(label_ids, dict):
    label_ids = {tag: i for i, tag in enumerate(label_ids)}
  if seq_len < 3:
    raise DataError(
      f"config.batch.seq_len: {seq_len} leaves no room for words after [CLS] and "
      "[SEP]; use a longer sequence"
    )
  specials = tokenizer.check_bert_specials(tok)
  word_labels = [_label_index(e, n, label_ids) for n, e in enumerate(examples)]
  encodings = tok.encode_batch(
    [e["tokens"] for e in examples], is_pretokenized=True, add_special_tokens=False
  )
  n = len(examples)
  arrays = {
    "inputs": np.full((n, seq_len), specials["[PAD]"], np.int32),
    "type_ids": np.zeros((n, seq_len), np.int32),
    "input_mask": np.zeros((n, seq_len), np.int32),
    "labels": np.full((n, seq_len), IGNORE, np.int32),
    "word_index": np.full((n, seq_len), IGNORE, np.int32),
  }
  truncated = 0
  for row, (enc, labels) in enumerate(zip(encodings, word_labels)):
    truncated += _fill(row, enc.word_ids, enc.ids, labels, arrays, specials, seq_len)
  return arrays, truncated


def word_predictions(pred_ids, arrays, examples, tag_names):
  """One tag per word from per-position predictions.

  Args:
    pred_ids: int [n, seq_len] predicted label ids.
    arrays: `encode`'s arrays for the same examples (its "word_index" is used).
    examples: the sentences that were encoded.
    tag_names: label id -> tag.

  Returns:
    A list with one list of tags per sentence, len(tokens) long: the prediction at each word's
    first sub-token, "O" for words with none in the window (lost to truncation).
  """
  pred_ids = np.asarray(pred_ids)
  word_index = np.asarray(arrays["word_index"])
  out = []
  for row, example in enumerate(examples):
    tags = ["O"] * len(example["tokens"])
    for pos in np.flatnonzero(word_index[row] >= 0):
      tags[word_index[row, pos]] = tag_names[int(pred_ids[row, pos])]
    out.append(tags)
  return out
