"""SQuAD (input_pipeline/finetuning/squad.py): reading JSON and tfds rows, sliding windows, predictions."""

import json

import numpy as np
import pytest

from input_pipeline import tokenizer
from input_pipeline.corpora import sources
from input_pipeline.finetuning import squad

SEQ, STRIDE, QLEN = 32, 8, 10

LONG = (
  "The river Rhine rises in the Swiss Alps and flows north through many towns. "
  "Boats carry coal and grain along the river to the sea. "
  "In the old town of Basel the bridge was built in (1226) by the bishop. "
  "Many people walk along the banks on sunny days and watch the boats. "
  "The river finally reaches the North Sea near the port of Rotterdam."
)
ACCENTS = (
  "Zürich is the largest city in Switzerland. The ÉCOLE Polytechnique Fédérale de "
  "Zürich is a famous university."
)
CURIE = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
EPFZ = "ÉCOLE Polytechnique Fédérale"


def _answer(context, text, start=None):
  return {"text": text, "answer_start": context.index(text) if start is None else start}


def _qa(qid, question, context, *answers, **extra):
  return dict(id=qid, question=question, answers=[_answer(context, *a) for a in answers], **extra)


V1 = {
  "version": "1.1",
  "data": [
    {
      "title": "Rhine",
      "paragraphs": [
        {
          "context": LONG,
          "qas": [
            _qa("rise", "Where does the Rhine rise?", LONG, ("the Swiss Alps",)),
            _qa("bridge", "When was the bridge built?", LONG, ("1226",)),
            _qa("port", "Which port is near the mouth of the river?", LONG, ("Rotterdam",)),
            _qa("carry", "What do boats carry?", LONG, ("coal and grain", 3)),  # wrong start
          ],
        }
      ],
    },
    {
      "title": "Zürich",
      "paragraphs": [
        {
          "context": ACCENTS,
          "qas": [
            _qa("city", "Which is the largest city?", ACCENTS, ("Zürich",)),
            _qa("school", "Name the famous university.", ACCENTS, (EPFZ, 999), (EPFZ,)),
          ],
        }
      ],
    },
  ],
}
V2 = {
  "version": "v2.0",
  "data": [
    {
      "title": "Curie",
      "paragraphs": [
        {
          "context": CURIE,
          "qas": [
            _qa(
              "chem",
              "When did Curie win the Chemistry prize?",
              CURIE,
              ("1911",),
              is_impossible=False,
            ),
            _qa(
              "peace",
              "When did Curie win the Peace prize?",
              CURIE,
              is_impossible=True,
              plausible_answers=[_answer(CURIE, "1903")],
            ),
          ],
        }
      ],
    }
  ],
}
# The training answer of each question (None: dropped from training, or unanswerable).
GOLD = {
  "rise": "the Swiss Alps",
  "bridge": "1226",
  "port": "Rotterdam",
  "carry": None,
  "city": "Zürich",
  "school": EPFZ,
  "chem": "1911",
  "peace": None,
}


def _write(tmp_path, name, content):
  path = tmp_path / name
  path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def tok():
  texts = [LONG, ACCENTS, CURIE] + [
    qa["question"] for d in (V1, V2) for a in d["data"] for p in a["paragraphs"] for qa in p["qas"]
  ]
  return tokenizer._train_wordpiece(texts * 3, 400, True)


@pytest.fixture
def v1(tmp_path):
  return squad.read_json(_write(tmp_path, "v1.json", V1))


@pytest.fixture
def v2(tmp_path):
  return squad.read_json(_write(tmp_path, "v2.json", V2))


def _encode(examples, tok, **kw):
  return squad.encode(examples, tok, SEQ, doc_stride=STRIDE, max_query_len=QLEN, **kw)


def _context_tokens(tok, context):
  return [tuple(o) for o in tok.encode(context, add_special_tokens=False).offsets]


# ----------------------------------------------------------------------------- reading


def test_read_json_schema(v1, v2):
  examples, skipped = v1
  assert skipped == 2  # "carry"'s answer and "school"'s first answer
  assert [ex["id"] for ex in examples] == ["rise", "bridge", "port", "carry", "city", "school"]
  assert examples[5] == {
    "id": "school",
    "title": "Zürich",
    "context": ACCENTS,
    "question": "Name the famous university.",
    "answers": {"text": [EPFZ, EPFZ], "answer_start": [999, ACCENTS.index(EPFZ)]},
    "is_impossible": False,
  }
  assert examples[3]["answers"] == {"text": ["coal and grain"], "answer_start": [3]}
  examples2, skipped2 = v2
  assert skipped2 == 0
  assert [(ex["id"], ex["is_impossible"], ex["answers"]) for ex in examples2] == [
    ("chem", False, {"text": ["1911"], "answer_start": [CURIE.index("1911")]}),
    ("peace", True, {"text": [], "answer_start": []}),
  ]


def test_train_span(v1, v2):
  spans = {ex["id"]: squad.train_span(ex) for ex in v1[0] + v2[0]}
  start = ACCENTS.index(EPFZ)
  assert spans["school"] == (start, start + len(EPFZ))  # the second, matching answer
  assert spans["carry"] is None and spans["peace"] is None
  for ex in v1[0] + v2[0]:
    span = spans[ex["id"]]
    assert (ex["context"][span[0] : span[1]] if span else None) == GOLD[ex["id"]]


@pytest.mark.parametrize(
  "content, reason",
  [
    ({"version": "1.1"}, "no top-level 'data' list"),
    (
      {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "x"}]}]}]},
      "no 'question' string",
    ),
    (
      {
        "data": [
          {
            "title": "t",
            "paragraphs": [
              {"context": "c", "qas": [{"id": "x", "question": "q?", "answers": [{"text": "c"}]}]}
            ],
          }
        ]
      },
      "answers must be",
    ),
    ({"data": [{"title": "t"}]}, "no 'paragraphs' list"),
    ("{not json", "JSONDecodeError"),
  ],
)
def test_read_json_malformed(tmp_path, content, reason):
  path = _write(tmp_path, "bad.json", content)
  with pytest.raises(sources.DataError) as e:
    squad.read_json(path)
  message = str(e.value)
  assert message.startswith(f"config.data.files: {path} is not SQuAD JSON")
  assert reason in message and "\n" not in message


def test_from_tfds_matches_read_json(v1, v2):
  def row(ex, v2_row):
    out = {
      "id": ex["id"].encode(),
      "title": ex["title"].encode(),
      "context": ex["context"].encode(),
      "question": ex["question"].encode(),
      "answers": {
        "text": np.array([t.encode() for t in ex["answers"]["text"]], object),
        "answer_start": np.array(ex["answers"]["answer_start"], np.int32),
      },
    }
    if v2_row:
      out["is_impossible"] = np.bool_(ex["is_impossible"])
      out["plausible_answers"] = {
        "text": np.array([b"1903"], object),
        "answer_start": np.array([CURIE.index("1903")], np.int32),
      }
    return out

  for examples, v2_rows in ((v1[0], False), (v2[0], True)):
    got = squad.from_tfds([row(ex, v2_rows) for ex in examples])
    assert got == examples
    assert all(type(a) is int for ex in got for a in ex["answers"]["answer_start"])


# ----------------------------------------------------------------------------- windows


def test_windows_cover_the_context(tok, v1):
  examples = v1[0]
  arrays, stats = _encode(examples, tok, train=False)
  n = len(arrays["inputs"])
  assert stats["features"] == n and stats["dropped_no_span"] == 0
  assert arrays["inputs"].shape == arrays["type_ids"].shape == (n, SEQ)
  assert arrays["offsets"].shape == (n, SEQ, 2) and arrays["max_context"].shape == (n, SEQ)
  assert sorted(set(arrays["example_index"])) == list(range(len(examples)))
  ids = {t: tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")}
  for i, ex in enumerate(examples):
    rows = np.flatnonzero(arrays["example_index"] == i)
    q = tok.encode(ex["question"], add_special_tokens=False).ids[:QLEN]
    ctx = _context_tokens(tok, ex["context"])
    per_window = SEQ - len(q) - 3
    expected = 1 + -(-max(0, len(ctx) - per_window) // STRIDE)
    assert len(rows) == expected
    if ex["context"] == LONG:
      assert expected >= 4
    seen, firsts = {}, []
    for r in rows:
      inputs, offsets = arrays["inputs"][r], arrays["offsets"][r]
      assert list(inputs[: len(q) + 2]) == [ids["[CLS]"]] + q + [ids["[SEP]"]]
      is_ctx = offsets[:, 0] >= 0
      c = np.flatnonzero(is_ctx)
      assert list(c) == list(range(len(q) + 2, len(q) + 2 + len(c))) and len(c) <= per_window
      end = c[-1] + 1
      assert inputs[end] == ids["[SEP]"] and all(inputs[end + 1 :] == ids["[PAD]"])
      assert list(arrays["input_mask"][r]) == [1] * (end + 1) + [0] * (SEQ - end - 1)
      assert list(arrays["type_ids"][r]) == [0] * (len(q) + 2) + [1] * (len(c) + 1) + [0] * (
        SEQ - end - 1
      )  # the context and its [SEP]
      assert (offsets[~is_ctx] == -1).all() and not arrays["max_context"][r][~is_ctx].any()
      window = [tuple(o) for o in offsets[c]]
      firsts.append(ctx.index(window[0]))
      assert window == ctx[firsts[-1] : firsts[-1] + len(c)]
      for o, m in zip(window, arrays["max_context"][r][c]):
        seen[o] = seen.get(o, 0) + int(m)
    assert firsts == [STRIDE * j for j in range(len(rows))]
    assert seen == {o: 1 for o in ctx}  # every token in some window, max context in exactly one


def test_max_context_prefers_the_centre(tok, v1):
  arrays, _ = _encode(v1[0][:1], tok, train=False)
  offsets, is_max = arrays["offsets"], arrays["max_context"]
  last = np.flatnonzero(offsets[1][:, 0] >= 0)[-1]  # window 1's last token, no right context
  later = [r for r in range(2, len(offsets)) if (offsets[r] == offsets[1, last]).all(axis=1).any()]
  assert later and not is_max[1, last]
  first = np.flatnonzero(offsets[0][:, 0] >= 0)[0]  # the context's first token: window 0 only
  assert is_max[0, first]


def test_windows_match_hf_run_qa(tok, v1):
  """Our windows are HF's (truncation='only_second') with stride = window - doc_stride."""
  transformers = pytest.importorskip("transformers")
  from tokenizers import processors

  examples = v1[0]
  arrays, _ = _encode(examples, tok, train=False)
  pair = type(tok).from_str(tok.to_str())
  pair.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]",
    pair="[CLS] $A [SEP] $B:1 [SEP]:1",
    special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
  )
  hf = transformers.PreTrainedTokenizerFast(
    tokenizer_object=pair, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]"
  )
  for i, ex in enumerate(examples):
    per_window = SEQ - len(tok.encode(ex["question"], add_special_tokens=False).ids) - 3
    enc = hf(
      ex["question"],
      ex["context"],
      truncation="only_second",
      max_length=SEQ,
      stride=per_window - STRIDE,
      return_overflowing_tokens=True,
      padding="max_length",
      return_offsets_mapping=True,
      return_token_type_ids=True,
    )
    rows = np.flatnonzero(arrays["example_index"] == i)
    assert len(rows) == len(enc["input_ids"])
    for j, r in enumerate(rows):
      assert arrays["inputs"][r].tolist() == enc["input_ids"][j]
      assert arrays["type_ids"][r].tolist() == enc["token_type_ids"][j]
      assert arrays["input_mask"][r].tolist() == enc["attention_mask"][j]
      expected = [
        o if k == 1 else (-1, -1) for o, k in zip(enc["offset_mapping"][j], enc.sequence_ids(j))
      ]
      assert [tuple(o) for o in arrays["offsets"][r].tolist()] == [tuple(o) for o in expected]


def test_positions_point_at_the_answer(tok, v1, v2):
  examples = v1[0] + v2[0]
  arrays, stats = _encode(examples, tok, train=True)
  assert stats["dropped_no_span"] == 1  # "carry"
  index = arrays["example_index"]
  assert examples[3]["id"] == "carry" and 3 not in index
  outside = 0
  for r, i in enumerate(index):
    ex, s, e = examples[i], arrays["start_positions"][r], arrays["end_positions"][r]
    offsets = arrays["offsets"][r]
    gold = GOLD[ex["id"]]
    if s:
      assert 0 < s <= e and offsets[s, 0] >= 0 and offsets[e, 0] >= 0
      assert ex["context"][offsets[s, 0] : offsets[e, 1]] == gold  # exact: original casing
    else:
      assert e == 0
      if gold is not None:  # answerable: the answer is not wholly inside this window
        start = ex["context"].index(gold)
        covered = offsets[offsets[:, 0] >= 0]
        assert not (covered[0, 0] <= start and start + len(gold) <= covered[-1, 1])
        outside += 1
  assert stats["answer_outside_window"] == outside > 0
  answered = {examples[i]["id"] for i in index[arrays["start_positions"] > 0]}
  assert answered == {k for k, v in GOLD.items() if v}
  peace = np.flatnonzero(index == len(v1[0]) + 1)
  assert len(peace) == 1 and arrays["start_positions"][peace[0]] == 0


def test_eval_keeps_every_question_and_truncates_questions(tok, v1):
  examples = v1[0]
  arrays, stats = squad.encode(examples, tok, SEQ, doc_stride=STRIDE, max_query_len=4, train=False)
  assert sorted(set(arrays["example_index"])) == list(range(len(examples)))
  long_questions = sum(
    len(tok.encode(ex["question"], add_special_tokens=False).ids) > 4 for ex in examples
  )
  assert stats["truncated_questions"] == long_questions > 0
  first_ctx = np.argmax(arrays["offsets"][:, :, 0] >= 0, axis=1)
  assert (first_ctx == 4 + 2).all()
  carry = np.flatnonzero(arrays["example_index"] == 3)
  assert (arrays["start_positions"][carry] == 0).all()


def test_tokenizer_truncation_is_ignored(tok, v1):
  truncating = type(tok).from_str(tok.to_str())
  truncating.enable_truncation(5)
  a, _ = _encode(v1[0], tok)
  b, _ = _encode(v1[0], truncating)
  assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
  assert truncating.truncation is not None  # the caller's tokenizer is left as it was


def test_encode_errors(tok, v1):
  with pytest.raises(sources.DataError, match=r"^config\.batch\.seq_len: 32 .* seq_len >= 68"):
    squad.encode(v1[0], tok, SEQ)  # max_query_len=64 leaves no room
  with pytest.raises(sources.DataError, match="doc_stride: 0"):
    squad.encode(v1[0], tok, SEQ, doc_stride=0, max_query_len=QLEN)
  bpe = tokenizer._train_bpe([LONG], 300, "<eos>")
  with pytest.raises(tokenizer.TokenizerError, match=r"config\.data\.tokenizer: .*\[CLS\]"):
    squad.encode(v1[0], bpe, SEQ, max_query_len=QLEN)


# ----------------------------------------------------------------------------- predictions


def _gold_logits(arrays, big=10.0):
  n = len(arrays["inputs"])
  start, end = np.zeros((n, SEQ), np.float32), np.zeros((n, SEQ), np.float32)
  rows = np.arange(n)
  start[rows, arrays["start_positions"]] += big * (arrays["start_positions"] > 0)
  end[rows, arrays["end_positions"]] += big * (arrays["end_positions"] > 0)
  return start, end


def test_postprocess_round_trip(tok, v1):
  examples = v1[0]
  arrays, _ = _encode(examples, tok, train=True)
  start, end = _gold_logits(arrays)
  rows = np.arange(len(start))
  start[:, 0] = end[:, 0] = 1 + rows  # null score 2 * (row + 1): least on an example's first row
  predictions, null_scores = squad.postprocess(start, end, arrays, examples)
  assert predictions == {k: v for k, v in GOLD.items() if k in predictions}
  assert set(predictions) == {"rise", "bridge", "port", "city", "school"}
  assert predictions["city"] == "Zürich" and predictions["school"] == EPFZ
  first = {examples[i]["id"]: r for r, i in reversed(list(enumerate(arrays["example_index"])))}
  assert null_scores == {k: 2.0 * (first[k] + 1) - 20.0 for k in predictions}


def _single_window(tok, ex):
  """An example's first window and its context tokens' positions -> their offsets."""
  arrays, _ = _encode([ex], tok, train=False)
  positions = np.flatnonzero(arrays["offsets"][0][:, 0] >= 0)
  return arrays, positions


def test_postprocess_bounds(tok, v1):
  ex = v1[0][0]
  arrays, positions = _single_window(tok, ex)
  arrays = {k: v[:1] for k, v in arrays.items()}
  a, far = positions[0], positions[12]
  start, end = np.zeros((1, SEQ)), np.zeros((1, SEQ))
  start[0, a], end[0, far], end[0, a + 1] = 10.0, 10.0, 5.0
  offsets = arrays["offsets"][0]

  def text(s, e):
    return LONG[offsets[s, 0] : offsets[e, 1]]

  def predict(**kw):
    return squad.postprocess(start, end, arrays, [ex], **kw)[0]["rise"]

  assert predict() == text(a, far) and len(text(a, far).split()) > 3
  assert predict(max_answer_len=3) == text(a, a + 1)  # the top pair is too long
  assert predict(max_answer_len=3, n_best=1) == ""  # the second-best end is out of n_best
  assert predict(max_answer_len=13) == text(a, far)  # 13 tokens: allowed
  assert predict(max_answer_len=12) == text(a, a + 1)
  end[0, a - 1] = 20.0  # an end before the start is never valid
  assert predict() == text(a, far)
  start[0, 1] = 30.0  # nor a start on a question token
  assert predict() == text(a, far)


def test_postprocess_uses_the_max_context_window(tok, v1):
  ex = v1[0][0]
  arrays, _ = _encode([ex], tok, train=False)
  offsets, is_max = arrays["offsets"], arrays["max_context"]
  # A token in windows 0 and 1 whose max context is window 1.
  pos0 = next(
    p for p in np.flatnonzero(offsets[0][:, 0] >= 0) if not is_max[0, p] and is_max[1].any()
  )
  key = tuple(offsets[0, pos0])
  pos1 = next(p for p in range(SEQ) if tuple(offsets[1, p]) == key)
  assert is_max[1, pos1]
  start, end = np.full((len(offsets), SEQ), -1e3), np.full((len(offsets), SEQ), -1e3)
  start[0, pos0], end[0, pos0 + 1] = 100.0, 100.0  # huge, but its start is not max context
  start[1, pos1], end[1, pos1] = 1.0, 1.0
  predictions, _ = squad.postprocess(start, end, arrays, [ex])
  assert predictions["rise"] == LONG[key[0] : key[1]]


def test_postprocess_version_2(tok, v2):
  examples = v2[0]
  arrays, _ = _encode(examples, tok, train=False)
  start, end = _gold_logits(arrays)
  peace = np.flatnonzero(arrays["example_index"] == 1)
  assert len(peace) == 1
  p = peace[0]
  start[p, 0], end[p, 0] = 5.0, 5.0  # null score 10
  span = np.flatnonzero(arrays["offsets"][p][:, 0] >= 0)[:2]
  start[p, span[0]], end[p, span[1]] = 2.0, 2.0  # best span score 4
  plausible = CURIE[arrays["offsets"][p][span[0], 0] : arrays["offsets"][p][span[1], 1]]

  predictions, null_scores = squad.postprocess(start, end, arrays, examples, version_2=True)
  assert predictions == {"chem": "1911", "peace": ""}
  assert null_scores == {"chem": -20.0, "peace": 6.0}
  predictions, _ = squad.postprocess(
    start, end, arrays, examples, version_2=True, null_threshold=7.0
  )
  assert predictions == {"chem": "1911", "peace": plausible} and plausible == "Marie Curie"
  predictions, _ = squad.postprocess(start, end, arrays, examples, version_2=False)
  assert predictions["peace"] == plausible


def test_postprocess_without_valid_span_predicts_empty(tok, v1):
  ex = v1[0][0]
  arrays, _ = _encode([ex], tok, train=False)
  start, end = np.zeros((len(arrays["inputs"]), SEQ)), np.zeros((len(arrays["inputs"]), SEQ))
  start[:, 0] = end[:, 0] = 50.0  # top-1 start and end are [CLS]
  predictions, null_scores = squad.postprocess(start, end, arrays, [ex], n_best=1)
  assert predictions == {"rise": ""} and null_scores == {"rise": float("inf")}
