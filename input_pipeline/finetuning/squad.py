"""Extractive question answering (SQuAD v1.1 and v2.0): reading, BERT features, predictions.

Examples are dicts in the tfds `squad` schema: "id", "title", "context", "question",
"answers": {"text": [...], "answer_start": [...]}, plus "is_impossible" (v2.0; an unanswerable
question has no answers). They come from a SQuAD JSON file (`read_json`) or from tfds rows
(`from_tfds`).

`encode` is BERT's sliding-window preprocessing (Google's `convert_examples_to_features`, HF
run_qa's `prepare_train_features`): each question with one window of its context per feature,
[CLS] question [SEP] context window [SEP], with the answer's token span in that window. The
training span of a question is its first answer whose text is found at its `answer_start` in
the context; a question with none ("Could not find answer" in the reference code) still counts
for evaluation, where all its gold texts are used, but gives no training features.

`postprocess` turns per-token start/end logits back into answer texts of the original context
(original casing and accents), picking among overlapping windows by BERT's "max context" rule.
"""

import json

import numpy as np

from input_pipeline import tokenizer
from input_pipeline.corpora import sources

# Where the QA options live in the config, for error messages.
CONFIG = "config.data.squad"
_SPECIALS = ("[PAD]", "[CLS]", "[SEP]")


# ----------------------------------------------------------------------------- reading


def _malformed(path, reason):
  return sources.DataError(
    f"config.data.files: {path} is not SQuAD JSON ({reason}); give a "
    "SQuAD v1.1/v2.0 file (data -> paragraphs -> qas)"
  )


def _answer_matches(context, text, start):
  return bool(text) and start >= 0 and context[start : start + len(text)] == text


def _is_answer(answer):
  return (
    isinstance(answer, dict)
    and isinstance(answer.get("text"), str)
    and isinstance(answer.get("answer_start"), int)
  )


def _example(qa, title, context, path):
  """One qa of a paragraph -> an example; a clear error when a field is missing."""
  if not isinstance(qa, dict):
    raise _malformed(path, f"a qa of {title!r} is not an object")
  for key in ("id", "question"):
    if not isinstance(qa.get(key), str):
      raise _malformed(path, f"a qa of {title!r} has no {key!r} string")
  impossible = bool(qa.get("is_impossible", False))
  answers = [] if impossible else qa.get("answers", [])
  if not isinstance(answers, list) or not all(map(_is_answer, answers)):
    raise _malformed(path, f"qa {qa['id']!r}: answers must be a list of {{text, answer_start}}")
  return {
    "id": qa["id"],
    "title": title,
    "context": context,
    "question": qa["question"],
    "answers": {
      "text": [a["text"] for a in answers],
      "answer_start": [a["answer_start"] for a in answers],
    },
    "is_impossible": impossible,
  }


def _paragraphs(data, path):
  """Yields (title, paragraph dict) of a SQuAD file's "data" list."""
  for article in data:
    if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
      raise _malformed(path, "an entry of 'data' has no 'paragraphs' list")
    for paragraph in article["paragraphs"]:
      if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
        raise _malformed(path, "a paragraph has no 'context' string")
      if not isinstance(paragraph.get("qas"), list):
        raise _malformed(path, "a paragraph has no 'qas' list")
      yield str(article.get("title", "")), paragraph


def read_json(path):
  """A SQuAD v1.1/v2.0 JSON file -> (examples, skipped).

  `skipped` counts the answers whose text is not at their `answer_start` in the context: they
  stay in the example (the metric uses every gold text) but are never a training span.
  """
  try:
    with open(path, encoding="utf-8") as f:
      squad = json.load(f)
  except (OSError, ValueError) as e:
    raise _malformed(path, f"{type(e).__name__}: {e}") from None
  if not isinstance(squad, dict) or not isinstance(squad.get("data"), list):
    raise _malformed(path, "no top-level 'data' list")
  examples = [
    _example(qa, title, paragraph["context"], path)
    for title, paragraph in _paragraphs(squad["data"], path)
    for qa in paragraph["qas"]
  ]
  skipped = sum(
    not _answer_matches(ex["context"], text, start)
    for ex in examples
    for text, start in zip(ex["answers"]["text"], ex["answers"]["answer_start"])
  )
  return examples, skipped


def _text(value):
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def from_tfds(rows):
  """Rows of tfds `squad` (v1.1 or v2.0, as numpy: bytes and arrays) -> examples."""
  examples = []
  for row in rows:
    texts = [_text(t) for t in np.asarray(row["answers"]["text"]).reshape(-1)]
    starts = [int(s) for s in np.asarray(row["answers"]["answer_start"]).reshape(-1)]
    impossible = bool(row.get("is_impossible", not texts))
    examples.append(
      {
        "id": _text(row["id"]),
        "title": _text(row.get("title", b"")),
        "context": _text(row["context"]),
        "question": _text(row["question"]),
        "answers": {
          "text": [] if impossible else texts,
          "answer_start": [] if impossible else starts,
        },
        "is_impossible": impossible,
      }
    )
  return examples


def train_span(example):
  """(start, end) characters of the example's first usable answer, or None (unanswerable,
  or no answer text found at its answer_start)."""
  if example["is_impossible"]:
    return None
  for text, start in zip(example["answers"]["text"], example["answers"]["answer_start"]):
    if _answer_matches(example["context"], text, start):
      return start, start + len(text)
  return None


# ----------------------------------------------------------------------------- features


def _special_ids(tok):
  ids = {t: tok.token_to_id(t) for t in _SPECIALS}
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise tokenizer.TokenizerError(
      f"config.data.tokenizer: the vocabulary has no {' '.join(missing)}; question answering "
      f"needs {' '.join(_SPECIALS)} (use kind='wordpiece' or a BERT vocab.txt)"
    )
  return ids


def _check_lengths(seq_len, doc_stride, max_query_len):
  if doc_stride < 1:
    raise sources.DataError(f"{CONFIG}.doc_stride: {doc_stride}; give a stride >= 1 token")
  if max_query_len < 1:
    raise sources.DataError(f"{CONFIG}.max_query_len: {max_query_len}; give a length >= 1")
  if seq_len - max_query_len - 3 < 1:
    raise sources.DataError(
      f"config.batch.seq_len: {seq_len} leaves no room for context after a question of "
      f"{CONFIG}.max_query_len={max_query_len} tokens and 3 specials; use seq_len >= "
      f"{max_query_len + 4} or a smaller max_query_len"
    )


def _encode_contexts(tok, examples):
  """{context: (ids [n], offsets [n, 2])}, each distinct context tokenized once."""
  unique = list(dict.fromkeys(ex["context"] for ex in examples))
  out = {}
  for text, enc in zip(unique, tok.encode_batch(unique, add_special_tokens=False)):
    out[text] = (np.asarray(enc.ids, np.int32), np.asarray(enc.offsets, np.int32).reshape(-1, 2))
  return out


def _token_span(char_span, offsets):
  """Character span -> (first, last) context token overlapping it, or None if none does."""
  if char_span is None:
    return None
  first = int(np.searchsorted(offsets[:, 1], char_span[0], side="right"))
  last = int(np.searchsorted(offsets[:, 0], char_span[1], side="left")) - 1
  return (first, last) if first <= last else None


def _windows(n_tokens, max_tokens, doc_stride):
  """Starts and lengths of the context windows (Google BERT's `doc_stride`: each window starts
  doc_stride tokens after the previous one; the last one ends at the context's end).
  An empty context still gets one (empty) window."""
  starts = [0]
  while starts[-1] + max_tokens < n_tokens:
    starts.append(starts[-1] + min(max_tokens, doc_stride))
  starts = np.asarray(starts, np.int32)
  return starts, np.minimum(n_tokens - starts, max_tokens).astype(np.int32)


def _max_context(starts, lengths, n_tokens):
  """bool [windows, n_tokens]: the window where each token has the most context, as Google
  BERT's `_check_is_max_context` (min of left/right context + 0.01 * window length; the first
  such window on ties)."""
  pos = np.arange(n_tokens)[None]
  left = pos - starts[:, None]
  right = (starts + lengths - 1)[:, None] - pos
  score = np.where(
    (left >= 0) & (right >= 0), np.minimum(left, right) + 0.01 * lengths[:, None], -np.inf
  )
  best = np.argmax(score, axis=0) if n_tokens else np.zeros(0, np.int64)
  return best[None] == np.arange(len(starts))[:, None]


def _example_features(question, ctx_ids, ctx_offsets, span, seq_len, doc_stride, ids):
  """All windows of one question: a dict of arrays with a leading windows axis."""
  starts, lengths = _windows(len(ctx_ids), seq_len - len(question) - 3, doc_stride)
  n = len(starts)
  c0 = len(question) + 2  # position of the first context token
  pos = np.arange(seq_len)[None]
  k = pos - c0  # context token number within the window
  in_ctx = (k >= 0) & (k < lengths[:, None])
  tok_idx = np.where(in_ctx, starts[:, None] + k, len(ctx_ids))  # len(...) -> padding slot
  inputs = np.full((n, seq_len), ids["[PAD]"], np.int32)
  inputs[:, 0] = ids["[CLS]"]
  inputs[:, 1 : c0 - 1] = question
  inputs[:, c0 - 1] = ids["[SEP]"]
  inputs = np.where(in_ctx, np.append(ctx_ids, 0)[tok_idx], inputs)
  inputs[np.arange(n), c0 + lengths] = ids["[SEP]"]
  input_mask = pos < (c0 + lengths + 1)[:, None]
  is_max = np.pad(_max_context(starts, lengths, len(ctx_ids)), ((0, 0), (0, 1)))
  padded_offsets = np.concatenate([ctx_offsets, np.full((1, 2), -1, np.int32)])
  out = {
    "inputs": inputs,
    "type_ids": ((pos >= c0) & input_mask).astype(np.int32),
    "input_mask": input_mask.astype(np.int32),
    "offsets": padded_offsets[tok_idx],
    "max_context": is_max[np.arange(n)[:, None], tok_idx],
  }
  out["start_positions"], out["end_positions"] = _positions(span, starts, lengths, c0)
  return out


def _positions(span, starts, lengths, c0):
  """Start/end token positions of `span` (context token numbers) in each window; 0 ([CLS])
  where the span is absent or not wholly inside the window."""
  zeros = np.zeros(len(starts), np.int32)
  if span is None:
    return zeros, zeros
  inside = (starts <= span[0]) & (span[1] < starts + lengths)
  return (
    np.where(inside, c0 + span[0] - starts, 0).astype(np.int32),
    np.where(inside, c0 + span[1] - starts, 0).astype(np.int32),
  )


def _empty(seq_len):
  shapes = {"inputs": (), "type_ids": (), "input_mask": (), "offsets": (2,), "max_context": ()}
  out = {
    key: np.zeros((0, seq_len) + s, bool if key == "max_context" else np.int32)
    for key, s in shapes.items()
  }
  out.update(
    {key: np.zeros(0, np.int32) for key in ("start_positions", "end_positions", "example_index")}
  )
  return out


def encode(examples, tok, seq_len, doc_stride=128, max_query_len=64, train=True):
  """Examples -> (arrays, stats): one row per (question, context window) feature.

  Each row is [CLS] question [SEP] window [SEP] [PAD]...: the question cut to its first
  `max_query_len` tokens, windows of at most seq_len - len(question) - 3 context tokens, each
  starting `doc_stride` tokens after the previous one (Google BERT's doc_stride, not HF's
  `stride`, which is the overlap). Arrays (n features):
    inputs, type_ids (1 on the window and its [SEP]), input_mask: int32 [n, seq_len];
    start_positions, end_positions: int32 [n], the answer's first/last token in the row, 0
      ([CLS]) when unanswerable or not wholly inside the window;
    example_index: int32 [n], the row's index in `examples`;
    offsets: int32 [n, seq_len, 2], character [start, end) of context tokens in the context,
      -1 elsewhere;
    max_context: bool [n, seq_len], whether this row is the token's max-context window.
  With train=True questions without a training span (`train_span`) that are not unanswerable
  give no rows (stats["dropped_no_span"]).
  """
  _check_lengths(seq_len, doc_stride, max_query_len)
  ids = _special_ids(tok)
  tok = tokenizer.plain(tok)
  contexts = _encode_contexts(tok, examples)
  questions = tok.encode_batch([ex["question"] for ex in examples], add_special_tokens=False)
  stats = dict(
    examples=len(examples),
    features=0,
    dropped_no_span=0,
    truncated_questions=0,
    answer_outside_window=0,
  )
  parts = []
  for i, (ex, q) in enumerate(zip(examples, questions)):
    ctx_ids, ctx_offsets = contexts[ex["context"]]
    span = _token_span(train_span(ex), ctx_offsets)
    if train and span is None and not ex["is_impossible"]:
      stats["dropped_no_span"] += 1
      continue
    stats["truncated_questions"] += len(q.ids) > max_query_len
    part = _example_features(
      np.asarray(q.ids[:max_query_len], np.int32),
      ctx_ids,
      ctx_offsets,
      span,
      seq_len,
      doc_stride,
      ids,
    )
    part["example_index"] = np.full(len(part["inputs"]), i, np.int32)
    if span is not None:
      stats["answer_outside_window"] += int(np.sum(part["start_positions"] == 0))
    parts.append(part)
  if not parts:
    return _empty(seq_len), stats
  arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  stats["features"] = len(arrays["inputs"])
  return arrays, stats


# ----------------------------------------------------------------------------- predictions


def _best_spans(start_logits, end_logits, offsets, is_max, n_best, max_answer_len):
  """Per row: (score, start, end) of the best valid span among the n_best start and n_best
  end positions; score -inf where none is valid."""
  n, seq_len = start_logits.shape
  k = min(n_best, seq_len)
  rows = np.arange(n)[:, None]
  s_idx = np.argsort(-start_logits, axis=1, kind="stable")[:, :k]
  e_idx = np.argsort(-end_logits, axis=1, kind="stable")[:, :k]
  s_ok = (offsets[rows, s_idx, 0] >= 0) & is_max[rows, s_idx]
  e_ok = offsets[rows, e_idx, 0] >= 0
  length = e_idx[:, None, :] - s_idx[:, :, None] + 1  # [n, k starts, k ends]
  valid = s_ok[:, :, None] & e_ok[:, None, :] & (length >= 1) & (length <= max_answer_len)
  score = start_logits[rows, s_idx][:, :, None] + end_logits[rows, e_idx][:, None, :]
  score = np.where(valid, score, -np.inf).reshape(n, k * k)
  flat = np.argmax(score, axis=1)
  r = np.arange(n)
  return score[r, flat], s_idx[r, flat // k], e_idx[r, flat % k]


def postprocess(
  start_logits,
  end_logits,
  arrays,
  examples,
  n_best=20,
  max_answer_len=30,
  version_2=False,
  null_threshold=0.0,
):
  """Logits [n, seq_len] of `encode`'s rows -> (predictions {id: text}, null_scores {id:
  score_null - best_non_null}).

  A span is valid when its start and end are context tokens, end >= start, it has at most
  max_answer_len tokens and its start token is in its max-context window; its score is
  start_logit + end_logit, and the best one over an example's rows is its answer (the text of
  the original context). The null score is the minimum over rows of the [CLS] start + end
  logits. With version_2 the answer is "" when null_score - best_non_null > null_threshold.
  An example with no valid span predicts "" (its null_scores entry is inf).
  Only examples that have rows in `arrays` get a prediction.
  """
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  best, starts, ends = _best_spans(
    start_logits,
    end_logits,
    arrays["offsets"],
    np.asarray(arrays["max_context"], bool),
    n_best,
    max_answer_len,
  )
  null = start_logits[:, 0] + end_logits[:, 0]
  index = np.asarray(arrays["example_index"])
  order = np.argsort(index, kind="stable")
  groups = np.split(order, np.flatnonzero(np.diff(index[order])) + 1) if len(order) else []
  predictions, null_scores = {}, {}
  for rows in groups:
    ex = examples[index[rows[0]]]
    row = rows[np.argmax(best[rows])]
    diff = float(np.min(null[rows]) - best[row])
    text = ""
    if np.isfinite(best[row]) and not (version_2 and diff > null_threshold):
      offsets = arrays["offsets"][row]
      text = ex["context"][offsets[starts[row], 0] : offsets[ends[row], 1]]
    predictions[ex["id"]], null_scores[ex["id"]] = text, diff
  return predictions, null_scores
