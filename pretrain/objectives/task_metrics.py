"""Fine-tuning task metrics, computed exactly as the standard scripts compute them.

Pure numpy / Python: nothing here imports JAX, scikit-learn, scipy or seqeval (the tests
compare against those).

GLUE (numpy arrays in, Python floats out): `accuracy`, `f1` (binary, positive class 1, as
sklearn.metrics.f1_score), `matthews` (sklearn.metrics.matthews_corrcoef, multi-class too),
`pearson` and `spearman` (scipy.stats.pearsonr / spearmanr, average ranks for ties). `METRICS`
maps their names to them and `compute` evaluates several at once.

NER: `entities` splits one tag sequence into (type, start, end) chunks by the lenient
conlleval rules of seqeval's `get_entities` (IOB1, IOB2, IOE, IOBES all parse), and
`entity_scores` is seqeval's default micro precision / recall / F1 over entity chunks.

SQuAD: `normalize_answer` (lower case, no punctuation, no articles a/an/the, single spaces),
`exact_match`, `token_f1`, `squad_scores` (the v1.1 script) and `squad_v2_scores` (the v2.0
script, with its no-answer threshold and best-threshold search). Unlike the official scripts,
which report percentages, every score here is a fraction in [0, 1]; thresholds are unchanged.
"""

import collections
import re
import string
import warnings

import numpy as np

# ---------------------------------------------------------------------------------------------
# GLUE-style metrics.


def _pair(preds, labels):
  """Both arguments as flat numpy arrays of equal, non-zero length."""
  preds, labels = np.asarray(preds).ravel(), np.asarray(labels).ravel()
  if preds.shape != labels.shape:
    raise ValueError(f"Lengths differ: {preds.shape[0]} predictions, {labels.shape[0]} labels.")
  if preds.size == 0:
    raise ValueError("No predictions to score.")
  return preds, labels


def accuracy(preds, labels):
  """Fraction of predictions equal to their labels."""
  preds, labels = _pair(preds, labels)
  return float(np.mean(preds == labels))


def f1(preds, labels):
  """Binary F1 of the positive class 1 (sklearn's f1_score, average="binary").

  Any value other than 1 counts as negative. 0.0 when there is no true positive, as sklearn
  returns under its default zero_division.
  """
  preds, labels = _pair(preds, labels)
  pred_pos, true_pos = preds == 1, labels == 1
  tp = int(np.sum(pred_pos & true_pos))
  wrong = int(np.sum(pred_pos ^ true_pos))  # false positives + false negatives
  return 2.0 * tp / (2 * tp + wrong) if tp else 0.0


def _confusion(preds, labels):
  """Confusion matrix, rows the true class, over the classes present in either array."""
  _, codes = np.unique(np.concatenate([labels, preds]), return_inverse=True)
  codes = codes.ravel()
  n, k = labels.size, int(codes.max()) + 1
  counts = np.bincount(codes[:n] * k + codes[n:], minlength=k * k)
  return counts.reshape(k, k).astype(np.float64)


def matthews(preds, labels):
  """Matthews correlation coefficient, multi-class by sklearn's formula; 0.0 if undefined."""
  c = _confusion(*_pair(preds, labels))
  t_sum, p_sum = c.sum(axis=1), c.sum(axis=0)
  n = p_sum.sum()
  cov_tp = np.trace(c) * n - t_sum @ p_sum
  cov_pp, cov_tt = n * n - p_sum @ p_sum, n * n - t_sum @ t_sum
  if cov_pp * cov_tt == 0:
    return 0.0
  return float(cov_tp / np.sqrt(cov_pp * cov_tt))


def pearson(x, y):
  """Pearson correlation as scipy.stats.pearsonr's statistic (nan when an input is constant)."""
  x, y = _pair(x, y)
  if x.size < 2:
    raise ValueError("Correlation needs at least 2 points.")
  if np.all(x == x[0]) or np.all(y == y[0]):
    return float("nan")
  x, y = x.astype(np.float64), y.astype(np.float64)
  x, y = x - np.mean(x), y - np.mean(y)
  x, y = x / np.max(np.abs(x)), y / np.max(np.abs(y))  # scaled first, as scipy, for overflow
  r = (x / np.linalg.norm(x)) @ (y / np.linalg.norm(y))
  return float(np.clip(r, -1.0, 1.0))


def _ranks(x):
  """1-based ranks of x, ties given the average of the ranks they span (scipy's rankdata)."""
  order = np.argsort(x, kind="stable")
  ordered = x[order]
  first = np.concatenate([[True], ordered[1:] != ordered[:-1]])
  starts = np.flatnonzero(first)
  ends = np.append(starts[1:], x.size)
  mean_rank = (starts + 1 + ends) / 2.0
  ranks = np.empty(x.size, np.float64)
  ranks[order] = mean_rank[np.cumsum(first) - 1]
  return ranks


def spearman(x, y):
  """Spearman rank correlation as scipy.stats.spearmanr's statistic (nan when constant)."""
  x, y = _pair(x, y)
  return pearson(_ranks(x), _ranks(y))


METRICS = {
  "accuracy": accuracy,
  "f1": f1,
  "matthews": matthews,
  "pearson": pearson,
  "spearman": spearman,
}


def compute(names, preds, labels):
  """The named METRICS (a name or a list of names) of preds against labels: {name: float}."""
  names = [names] if isinstance(names, str) else list(names)
  unknown = [name for name in names if name not in METRICS]
  if unknown:
    raise ValueError(f"Unknown metrics {unknown}; known: {sorted(METRICS)}.")
  return {name: METRICS[name](preds, labels) for name in names}


# ---------------------------------------------------------------------------------------------
# Entity-level NER scores (seqeval's defaults).


def _split_tag(tag):
  """("B", "PER") from "B-PER": the first character, and the type after the first "-" of the
  rest (the rest itself if it has none, "_" if it is empty)."""
  rest = tag[1:]
  kind = rest.partition("-")[2] if "-" in rest else rest
  return tag[0], kind or "_"


def _chunk_ends(prev, cur, prev_kind, kind):
  """Whether a chunk ends on the previous tag (conlleval's rules)."""
  if prev in ("E", "S") or (prev in ("B", "I") and cur in ("B", "S", "O")):
    return True
  return prev not in ("O", ".") and prev_kind != kind


def _chunk_starts(prev, cur, prev_kind, kind):
  """Whether a chunk starts on the current tag (conlleval's rules)."""
  if cur in ("B", "S") or (cur in ("E", "I") and prev in ("E", "S", "O")):
    return True
  return cur not in ("O", ".") and prev_kind != kind


def entities(tags):
  """The (type, start, end) chunks of one tag sequence, end inclusive, in order.

  Lenient like conlleval and seqeval's get_entities: an I- tag after O or after a tag of
  another type starts a chunk (IOB1), E- and S- tags close one (IOE, IOBES), and a tag
  without a type ("B") has type "_".
  """
  chunks = []
  prev, prev_kind, start = "O", "", 0
  for i, tag in enumerate(list(tags) + ["O"]):
    cur, kind = _split_tag(tag)
    if _chunk_ends(prev, cur, prev_kind, kind):
      chunks.append((prev_kind, start, i - 1))
    if _chunk_starts(prev, cur, prev_kind, kind):
      start = i
    prev, prev_kind = cur, kind
  return chunks


def entity_scores(true_seqs, pred_seqs):
  """Micro-averaged entity precision, recall and F1 as seqeval's *_score functions by default.

  An entity counts as found when its type, start and end all match. Scores are 0.0 where
  their denominator is (seqeval's default zero_division).

  Args:
    true_seqs: a list of gold tag sequences (lists of strings such as "B-PER").
    pred_seqs: the predicted tag sequences, one per gold sequence, of the same lengths.

  Returns:
    {"precision": float, "recall": float, "f1": float}.

  Raises:
    ValueError: if the numbers of sequences, or the lengths of a pair, differ.
  """
  if len(true_seqs) != len(pred_seqs):
    raise ValueError(f"{len(true_seqs)} gold sequences but {len(pred_seqs)} predicted.")
  for i, (gold, pred) in enumerate(zip(true_seqs, pred_seqs)):
    if len(gold) != len(pred):
      raise ValueError(f"Sequence {i}: {len(gold)} gold tags but {len(pred)} predicted.")
  # One sequence with an "O" after each sentence, as seqeval scores them.
  gold = set(entities([t for seq in true_seqs for t in list(seq) + ["O"]]))
  pred = set(entities([t for seq in pred_seqs for t in list(seq) + ["O"]]))
  tp = len(gold & pred)
  precision = tp / len(pred) if pred else 0.0
  recall = tp / len(gold) if gold else 0.0
  f_score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": float(precision), "recall": float(recall), "f1": float(f_score)}


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 and v2.0.

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s):
  """Lower case, punctuation removed, articles a/an/the removed, whitespace collapsed."""
  s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred, gold):
  """1.0 if the two answers are equal once normalised, else 0.0."""
  return float(normalize_answer(pred) == normalize_answer(gold))


def _overlap_f1(pred_tokens, gold_tokens):
  """F1 of the bag-of-tokens overlap; 0.0 when no token is shared (the v1.1 rule)."""
  same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred_tokens), same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def token_f1(pred, gold):
  """Token-overlap F1 of the normalised answers, by the v2.0 rule: when either is empty, 1.0 if
  both are, else 0.0."""
  pred_tokens, gold_tokens = normalize_answer(pred).split(), normalize_answer(gold).split()
  if not pred_tokens or not gold_tokens:
    return float(pred_tokens == gold_tokens)
  return _overlap_f1(pred_tokens, gold_tokens)


def _v1_f1(pred, gold):
  return _overlap_f1(normalize_answer(pred).split(), normalize_answer(gold).split())


def squad_scores(predictions, answers):
  """SQuAD v1.1 exact match and F1, as the official evaluate-v1.1.py, but as fractions.

  Each question scores the best over its gold answers. A question without a prediction scores
  0 (with a warning, as the official script prints one). F1 follows v1.1: two answers that
  normalise to nothing share no token and score 0.

  Args:
    predictions: {question id: predicted answer text}.
    answers: {question id: [gold answer texts]}, each list non-empty.

  Returns:
    {"exact_match": float, "f1": float}, fractions in [0, 1] (the script reports percent).
  """
  if not answers:
    raise ValueError("No questions to score.")
  missing = [qid for qid in answers if qid not in predictions]
  if missing:
    warnings.warn(
      f"{len(missing)} unanswered questions score 0, e.g. {missing[0]!r}.", stacklevel=2
    )
  em = f1_sum = 0.0
  for qid, golds in answers.items():
    if not golds:
      raise ValueError(f"Question {qid!r} has no gold answer (use squad_v2_scores).")
    if qid in predictions:
      em += max(exact_match(predictions[qid], gold) for gold in golds)
      f1_sum += max(_v1_f1(predictions[qid], gold) for gold in golds)
  return {"exact_match": em / len(answers), "f1": f1_sum / len(answers)}


def _v2_raw_scores(predictions, answers):
  """Per-question exact and F1 before any threshold; golds normalising to "" are dropped."""
  exact, f1s = {}, {}
  for qid, golds in answers.items():
    golds = [gold for gold in golds if normalize_answer(gold)] or [""]
    pred = predictions[qid]
    exact[qid] = max(exact_match(pred, gold) for gold in golds)
    f1s[qid] = max(token_f1(pred, gold) for gold in golds)
  return exact, f1s


def _apply_threshold(scores, na_probs, has_answer, threshold):
  """A question whose no-answer probability exceeds threshold is answered "" instead."""
  return {
    qid: (float(not has_answer[qid]) if na_probs[qid] > threshold else score)
    for qid, score in scores.items()
  }


def _best_threshold(predictions, scores, na_probs, has_answer):
  """(best score as a fraction, its threshold) over thresholds at the na_probs values.

  As the official find_best_thresh: start from answering nothing, then answer questions in
  order of increasing na_prob (ties in na_probs' order), keeping the best running score.
  """
  best = current = sum(1 for qid in scores if not has_answer[qid])
  best_thresh = 0.0
  for qid in sorted(na_probs, key=lambda q: na_probs[q]):
    if qid not in scores:
      continue
    if has_answer[qid]:
      current += scores[qid]
    elif predictions[qid]:  # the raw text: a non-empty answer to an unanswerable question
      current -= 1
    if current > best:
      best, best_thresh = current, na_probs[qid]
  return best / len(scores), float(best_thresh)


def _group_means(exact, f1s, qids, prefix):
  if not qids:
    return {}
  return {
    f"{prefix}exact": sum(exact[q] for q in qids) / len(qids),
    f"{prefix}f1": sum(f1s[q] for q in qids) / len(qids),
  }


def squad_v2_scores(predictions, answers, na_probs=None, threshold=1.0):
  """SQuAD v2.0 scores, as the official evaluate-v2.0.py, but as fractions.

  An unanswerable question has an empty list of answers; its only gold answer is then "".
  Without na_probs every no-answer probability is 0.0, as in the official script.

  Args:
    predictions: {question id: predicted answer text ("" for no answer)}; every question
      in answers needs one (the official script fails without).
    answers: {question id: [gold answer texts]}, [] for an unanswerable question.
    na_probs: optional {question id: probability (or score) that it has no answer}.
    threshold: a prediction counts as "" when its na_prob is greater than this.

  Returns:
    {"exact", "f1"} over all questions, "HasAns_exact", "HasAns_f1" and "NoAns_exact",
    "NoAns_f1" over the answerable / unanswerable ones where there are any, and, when na_probs
    is given, "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh" (the best scores
    over no-answer thresholds, computed on the scores before `threshold` is applied). Scores
    are fractions in [0, 1] (the script reports percent); thresholds are na_probs values.
  """
  if not answers:
    raise ValueError("No questions to score.")
  missing = [qid for qid in answers if qid not in predictions]
  if missing:
    raise ValueError(f"{len(missing)} questions have no prediction, e.g. {missing[0]!r}.")
  probs = {qid: 0.0 for qid in answers} if na_probs is None else na_probs
  lacking = [qid for qid in answers if qid not in probs]
  if lacking:
    raise ValueError(f"{len(lacking)} questions have no na_prob, e.g. {lacking[0]!r}.")
  has_answer = {qid: bool(golds) for qid, golds in answers.items()}
  exact_raw, f1_raw = _v2_raw_scores(predictions, answers)
  exact = _apply_threshold(exact_raw, probs, has_answer, threshold)
  f1s = _apply_threshold(f1_raw, probs, has_answer, threshold)
  out = _group_means(exact, f1s, list(answers), "")
  out.update(_group_means(exact, f1s, [q for q in answers if has_answer[q]], "HasAns_"))
  out.update(_group_means(exact, f1s, [q for q in answers if not has_answer[q]], "NoAns_"))
  if na_probs is not None:
    out["best_exact"], out["best_exact_thresh"] = _best_threshold(
      predictions, exact_raw, na_probs, has_answer
    )
    out["best_f1"], out["best_f1_thresh"] = _best_threshold(
      predictions, f1_raw, na_probs, has_answer
    )
  return out
