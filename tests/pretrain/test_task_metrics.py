"""Fine-tuning task metrics (pretrain/objectives/task_metrics.py) against sklearn, scipy, seqeval and
SQuAD scores worked out by hand."""

import math
import warnings

import numpy as np
import pytest

from pretrain.objectives import task_metrics as tm


def _quiet(fn, *args, **kwargs):
  """fn(*args, **kwargs) with the references' warnings (undefined / constant input) hidden."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    return fn(*args, **kwargs)


def _same(ours, theirs):
  if math.isnan(theirs):
    assert math.isnan(ours)
  else:
    assert isinstance(ours, float) and ours == pytest.approx(theirs, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# GLUE


def _classification_cases():
  rng = np.random.default_rng(0)
  cases = []
  for n, k in [(50, 2), (200, 2), (7, 2), (100, 3), (300, 5)]:
    labels = rng.integers(0, k, n)
    noisy = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), labels)
    cases += [(noisy, labels), (rng.integers(0, k, n), labels)]
  ones, zeros = np.ones(20, int), np.zeros(20, int)
  cases += [
    (ones, ones),
    (zeros, zeros),
    (ones, zeros),
    (zeros, ones),
    (ones, rng.integers(0, 2, 20)),
    (rng.integers(0, 2, 20), zeros),
    (np.array([0, 1]), np.array([1, 0])),
    (2 * ones, rng.integers(0, 3, 20)),
  ]
  return cases


@pytest.mark.parametrize("case", range(len(_classification_cases())))
def test_classification_metrics_equal_sklearn(case):
  sk = pytest.importorskip("sklearn.metrics")
  preds, labels = _classification_cases()[case]
  _same(tm.accuracy(preds, labels), sk.accuracy_score(labels, preds))
  _same(tm.matthews(preds, labels), _quiet(sk.matthews_corrcoef, labels, preds))
  if max(preds.max(), labels.max()) <= 1:
    _same(tm.f1(preds, labels), _quiet(sk.f1_score, labels, preds))


def test_classification_metrics_by_hand():
  preds, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
  assert tm.accuracy(preds, labels) == pytest.approx(0.6)
  assert tm.f1(preds, labels) == pytest.approx(2 / 3)  # tp 2, fp 1, fn 1
  assert tm.matthews(preds, labels) == pytest.approx((2 * 1 - 1 * 1) / math.sqrt(3 * 2 * 3 * 2))
  assert tm.f1(np.zeros(4), np.zeros(4)) == 0.0 and tm.matthews(np.ones(4), np.ones(4)) == 0.0
  assert tm.matthews(np.array([0, 1, 2]), np.array([0, 1, 2])) == pytest.approx(1.0)


def _correlation_cases():
  rng = np.random.default_rng(1)
  x = rng.normal(size=100)
  return [
    (x, 2 * x + rng.normal(size=100)),
    (rng.normal(size=37), rng.normal(size=37)),
    (rng.integers(0, 5, 60), rng.integers(0, 5, 60)),  # many ties
    (rng.integers(0, 3, 60).astype(np.float32), rng.normal(size=60)),
    (x, -(x**3)),
    (np.array([1.0, 2.0]), np.array([3.0, 1.0])),
    (np.array([1e200, -1e200, 3e199]), np.array([1.0, 2.0, 3.0])),
    (np.full(7, 0.1), rng.normal(size=7)),  # constant (its mean is not 0.1): undefined
    (rng.normal(size=5), np.full(5, 3)),
  ]


@pytest.mark.parametrize("case", range(len(_correlation_cases())))
def test_correlations_equal_scipy(case):
  stats = pytest.importorskip("scipy.stats")
  x, y = _correlation_cases()[case]
  _same(tm.pearson(x, y), float(_quiet(stats.pearsonr, x, y)[0]))
  _same(tm.spearman(x, y), float(_quiet(stats.spearmanr, x, y)[0]))


def test_spearman_averages_tied_ranks():
  # Ranks of x: 1, 2.5, 2.5, 4; of y: 1, 2, 3, 4.
  rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4])
  expected = np.corrcoef(rx, ry)[0, 1]
  assert tm.spearman([10, 20, 20, 30], [1, 2, 3, 4]) == pytest.approx(expected)
  assert tm.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


def test_compute_and_errors():
  preds, labels = np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])
  out = tm.compute(["accuracy", "f1"], preds, labels)
  assert out == {"accuracy": pytest.approx(0.75), "f1": pytest.approx(0.8)}
  assert set(tm.METRICS) == {"accuracy", "f1", "matthews", "pearson", "spearman"}
  assert tm.compute("matthews", preds, labels) == {"matthews": tm.matthews(preds, labels)}
  with pytest.raises(ValueError, match="Unknown"):
    tm.compute(["bleu"], preds, labels)
  with pytest.raises(ValueError):
    tm.accuracy(preds, labels[:3])


# ---------------------------------------------------------------------------------------------
# NER

_SEQUENCES = [  # (gold, predicted)
  (["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),  # IOB2
  (["I-PER", "I-PER", "O", "I-LOC", "B-LOC"], ["B-PER", "I-PER", "O", "I-LOC", "I-LOC"]),  # IOB1
  (["O", "I-PER", "I-PER", "O"], ["O", "O", "I-PER", "O"]),  # stray I- after O
  (["B-PER", "I-LOC", "I-LOC"], ["B-PER", "I-PER", "I-LOC"]),  # type changes
  (["O", "O", "B-MISC", "I-MISC"], ["O", "O", "B-MISC", "I-MISC"]),  # at the end
  (["B-ORG", "E-ORG", "S-LOC", "I-ORG", "E-ORG"], ["B-ORG", "E-ORG", "S-LOC", "B-ORG", "E-ORG"]),
  (["B", "I", "O", "B-X", "X-X", "."], ["B", "O", "I", "B-X", ".-X", "O"]),  # odd tags
  (["B-ORG", "S-ORG", "I-ORG", "S-ORG"], ["I-ORG", "S-ORG", "E-ORG", "E-ORG"]),
  (["O", "O"], ["B-PER", "O"]),
  ([], []),
]


@pytest.mark.parametrize("gold,pred", _SEQUENCES)
def test_entities_equal_seqeval(gold, pred):
  seq = pytest.importorskip("seqeval.metrics.sequence_labeling")
  assert tm.entities(gold) == _quiet(seq.get_entities, gold)
  assert tm.entities(pred) == _quiet(seq.get_entities, pred)


def test_entities_by_hand():
  assert tm.entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
  assert tm.entities(["I-PER", "I-PER", "O", "I-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
  assert tm.entities(["O", "I-PER", "B-PER"]) == [("PER", 1, 1), ("PER", 2, 2)]
  assert tm.entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]
  assert tm.entities(["B-ORG", "S-ORG", "I-ORG"]) == [("ORG", 0, 0), ("ORG", 1, 1), ("ORG", 2, 2)]
  assert tm.entities(["S-ORG", "B-ORG", "E-ORG", "E-ORG"]) == [
    ("ORG", 0, 0),
    ("ORG", 1, 2),
    ("ORG", 3, 3),
  ]


def _seqeval_scores(gold, pred):
  m = pytest.importorskip("seqeval.metrics")
  return {
    "precision": _quiet(m.precision_score, gold, pred),
    "recall": _quiet(m.recall_score, gold, pred),
    "f1": _quiet(m.f1_score, gold, pred),
  }


def _assert_scores_equal(gold, pred):
  ours, theirs = tm.entity_scores(gold, pred), _seqeval_scores(gold, pred)
  assert set(ours) == {"precision", "recall", "f1"}
  for key in ours:
    _same(ours[key], float(theirs[key]))


def test_entity_scores_equal_seqeval_on_fixtures():
  gold, pred = [list(g) for g, _ in _SEQUENCES], [list(p) for _, p in _SEQUENCES]
  _assert_scores_equal(gold, pred)
  for g, p in _SEQUENCES:
    _assert_scores_equal([list(g)], [list(p)])
  _assert_scores_equal([["O"]], [["O"]])  # no entity anywhere: all 0.0


def test_entity_scores_equal_seqeval_on_random_sequences():
  rng = np.random.default_rng(2)
  tags = np.array(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-MISC", "E-ORG", "S-ORG"])
  golds, preds = [], []
  for _ in range(300):
    n = int(rng.integers(0, 12))
    gold = tags[rng.integers(0, len(tags), n)]
    pred = np.where(rng.random(n) < 0.3, tags[rng.integers(0, len(tags), n)], gold)
    golds.append(gold.tolist())
    preds.append(pred.tolist())
  seq = pytest.importorskip("seqeval.metrics.sequence_labeling")
  for gold in golds:
    assert tm.entities(gold) == _quiet(seq.get_entities, gold)
  for start in range(0, 300, 30):
    _assert_scores_equal(golds[start : start + 30], preds[start : start + 30])
  _assert_scores_equal(golds, preds)


def test_entity_scores_by_hand():
  gold = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
  pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
  assert tm.entity_scores(gold, pred) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
  # A sentence boundary ends an entity: 2 gold entities, 1 of them predicted (of 2 predicted).
  gold, pred = [["B-PER", "I-PER"], ["I-PER"]], [["B-PER", "I-PER"], ["I-LOC"]]
  assert tm.entity_scores(gold, pred) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
  gold, pred = [["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]]
  assert tm.entity_scores(gold, pred) == pytest.approx(
    {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}
  )


def test_entity_scores_reject_mismatched_lengths():
  with pytest.raises(ValueError):
    tm.entity_scores([["O"], ["O"]], [["O"]])
  with pytest.raises(ValueError):
    tm.entity_scores([["O", "B-PER"]], [["O"]])


# ---------------------------------------------------------------------------------------------
# SQuAD


@pytest.mark.parametrize(
  "text,normal",
  [
    ("The  Denver Broncos!", "denver broncos"),
    ("An apple, a day.", "apple day"),
    ("theater at the theatre", "theater at theatre"),  # articles only as whole words
    ("  Hello,\tWorld\n ", "hello world"),
    ("rock-n-roll", "rocknroll"),
    ("the-end", "theend"),  # punctuation goes before articles are looked for
    ("A", ""),
    ("ÉLAN", "élan"),
  ],
)
def test_normalize_answer(text, normal):
  assert tm.normalize_answer(text) == normal


def test_exact_match_and_token_f1_by_hand():
  assert tm.exact_match("the Denver Broncos", "Denver Broncos") == 1.0
  assert tm.exact_match("Denver", "Denver Broncos") == 0.0
  assert tm.token_f1("Broncos win", "Denver Broncos") == pytest.approx(0.5)
  assert tm.token_f1("Denver Broncos won", "the Denver Broncos") == pytest.approx(0.8)
  assert tm.token_f1("x x y", "x y y") == pytest.approx(2 / 3)  # counts, not sets
  assert tm.token_f1("", "") == 1.0 and tm.token_f1("the", "") == 1.0
  assert tm.token_f1("Paris", "") == 0.0 and tm.token_f1("", "Paris") == 0.0
  assert tm.token_f1("London", "Paris") == 0.0


def test_squad_v1_by_hand():
  answers = {
    "q1": ["Denver Broncos", "Broncos"],
    "q2": ["Santa Clara"],
    "q3": ["1966"],
    "q4": ["the Eiffel Tower"],
  }
  predictions = {"q1": "Broncos win", "q2": "Santa Clara, California", "q4": "Eiffel tower."}
  with pytest.warns(UserWarning, match="unanswered"):
    out = tm.squad_scores(predictions, answers)
  # q1: F1 max(0.5, 2/3) = 2/3, q2: 0.8, q3 missing: 0, q4: exact.
  assert out == pytest.approx({"exact_match": 0.25, "f1": (2 / 3 + 0.8 + 0 + 1) / 4})
  # v1.1 F1: answers normalising to nothing share no token.
  assert tm.squad_scores({"q": "the"}, {"q": ["a"]}) == {"exact_match": 1.0, "f1": 0.0}


_V2_ANSWERS = {"a1": ["Denver Broncos"], "a2": ["Santa Clara"], "n1": [], "n2": [], "a3": ["1966"]}
_V2_PREDICTIONS = {
  "a1": "Denver Broncos",
  "a2": "Santa Clara, California",
  "n1": "",
  "n2": "Levi's Stadium",
  "a3": "",
}


def test_squad_v2_without_na_probs():
  out = tm.squad_v2_scores(_V2_PREDICTIONS, _V2_ANSWERS)
  # exact: a1 1, a2 0, n1 1, n2 0, a3 0; f1: 1, 0.8, 1, 0, 0.
  assert out == pytest.approx(
    {
      "exact": 0.4,
      "f1": 0.56,
      "HasAns_exact": 1 / 3,
      "HasAns_f1": 0.6,
      "NoAns_exact": 0.5,
      "NoAns_f1": 0.5,
    }
  )
  only_ans = tm.squad_v2_scores({"a1": "Denver"}, {"a1": ["Denver Broncos"]})
  assert only_ans == pytest.approx(
    {"exact": 0.0, "f1": 2 / 3, "HasAns_exact": 0.0, "HasAns_f1": 2 / 3}
  )


def test_squad_v2_threshold_and_best_threshold():
  na_probs = {"a1": 0.1, "a2": 0.6, "n1": 0.9, "n2": 0.7, "a3": 0.3}
  out = tm.squad_v2_scores(_V2_PREDICTIONS, _V2_ANSWERS, na_probs, threshold=0.5)
  # Over 0.5, a2, n1 and n2 answer "": a2 loses its 0.8, n2 becomes right.
  # Best threshold, answering in order a1 (0.1), a3, a2 (0.6), n2, n1 from 2 (the NoAns):
  # exact 3, 3, 3, 2, 2 -> best 3/5 at 0.1; f1 3, 3, 3.8, 2.8, 2.8 -> best 3.8/5 at 0.6.
  assert out == pytest.approx(
    {
      "exact": 0.6,
      "f1": 0.6,
      "HasAns_exact": 1 / 3,
      "HasAns_f1": 1 / 3,
      "NoAns_exact": 1.0,
      "NoAns_f1": 1.0,
      "best_exact": 0.6,
      "best_exact_thresh": 0.1,
      "best_f1": 0.76,
      "best_f1_thresh": 0.6,
    }
  )
  # Nothing over the default threshold 1.0: the scores are those without na_probs.
  plain = tm.squad_v2_scores(_V2_PREDICTIONS, _V2_ANSWERS, na_probs)
  assert plain["exact"] == pytest.approx(0.4) and plain["f1"] == pytest.approx(0.56)
  assert plain["best_f1"] == pytest.approx(0.76) and plain["best_f1_thresh"] == 0.6
  # A na_prob equal to the threshold is not over it: only n1 and n2 answer "".
  at = tm.squad_v2_scores(_V2_PREDICTIONS, _V2_ANSWERS, na_probs, threshold=0.6)
  assert (at["exact"], at["f1"]) == pytest.approx((0.6, 0.76))
  # No threshold beats answering nothing: the best stays at 0.0.
  worse = tm.squad_v2_scores(
    {"n1": "x", "a1": "y"}, {"n1": [], "a1": ["z"]}, {"n1": 0.2, "a1": 0.5}
  )
  assert (worse["best_exact"], worse["best_exact_thresh"]) == (0.5, 0.0)
  # The search looks at the raw text: "The" to an unanswerable question costs a point there,
  # though it normalises to "" and so scores as exact.
  quirk = tm.squad_v2_scores({"n": "The", "a": "x"}, {"n": [], "a": ["x"]}, {"n": 0.4, "a": 0.5})
  assert quirk["NoAns_exact"] == 1.0 and quirk["exact"] == 1.0
  assert (quirk["best_exact"], quirk["best_exact_thresh"]) == (0.5, 0.0)


def test_squad_v2_gold_answers_and_errors():
  # A gold answer that normalises to "" is dropped; the question still has an answer.
  out = tm.squad_v2_scores({"q": ""}, {"q": ["the", "Paris"]})
  assert out == {"exact": 0.0, "f1": 0.0, "HasAns_exact": 0.0, "HasAns_f1": 0.0}
  out = tm.squad_v2_scores({"q": "Paris"}, {"q": ["the", "Paris"]})
  assert out["exact"] == 1.0
  with pytest.raises(ValueError, match="no prediction"):
    tm.squad_v2_scores({}, {"q": ["Paris"]})
  with pytest.raises(ValueError, match="na_prob"):
    tm.squad_v2_scores({"q": "x"}, {"q": ["Paris"]}, {"other": 0.5})
