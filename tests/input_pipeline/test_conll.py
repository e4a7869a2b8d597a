"""CoNLL NER reading, sub-token label alignment and mapping back (input_pipeline/finetuning/conll.py)."""

import numpy as np
import pytest

from input_pipeline import tokenizer
from input_pipeline.corpora import sources
from input_pipeline.finetuning import conll

DataError = sources.DataError

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""
# tfds conll2003's ner ClassLabel names.
TFDS_NAMES = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def tok():
  """A 300-token WordPiece vocabulary from CPython's docs: most CoNLL words split into pieces."""
  import pydoc_data.topics

  docs = [text for _, text in sorted(pydoc_data.topics.topics.items())][:40]
  words = " ".join(line.split(" ")[0] for line in CONLL.splitlines())
  return tokenizer._train_wordpiece(docs + [words], 300, True)


@pytest.fixture()
def examples(tmp_path):
  return conll.read_conll(_write(tmp_path, "train.txt", CONLL))


def _pieces(tok, word):
  return tok.encode([word], is_pretokenized=True, add_special_tokens=False).ids


# ----------------------------------------------------------------------------- reading


def test_read_conll2003_layout(examples):
  assert len(examples) == 3
  assert examples[0]["tokens"] == [
    "EU",
    "rejects",
    "German",
    "call",
    "to",
    "boycott",
    "British",
    "lamb",
    ".",
  ]
  assert examples[0]["ner_tags"] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
  assert examples[1] == {"tokens": ["Peter", "Blackburn"], "ner_tags": ["B-PER", "I-PER"]}
  assert examples[2] == {"tokens": ["BRUSSELS", "1996-08-22"], "ner_tags": ["B-LOC", "O"]}


def test_read_two_columns_without_trailing_blank(tmp_path):
  path = _write(tmp_path, "two.txt", "Jim B-PER\nsaw O\n\n\n\nParis S-LOC\nagain O")
  assert conll.read_conll(path) == [
    {"tokens": ["Jim", "saw"], "ner_tags": ["B-PER", "O"]},
    {"tokens": ["Paris", "again"], "ner_tags": ["S-LOC", "O"]},
  ]


def test_tags_of(examples):
  assert conll.tags_of(examples) == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
  assert conll.tags_of([]) == ["O"]


def test_malformed_lines_name_file_and_line(tmp_path):
  path = _write(tmp_path, "bad.txt", "EU NNP B-NP B-ORG\nrejects\n")
  with pytest.raises(DataError) as e:
    conll.read_conll(path)
  message = str(e.value)
  assert message.startswith(f"config.data.files: {path} line 2: 'rejects' has one column")
  assert "\n" not in message
  path = _write(tmp_path, "tag.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nx NN I-NP PER\n")
  with pytest.raises(DataError, match=r"tag\.txt line 4: tag 'PER' is not O or B-/I-/E-/S-"):
    conll.read_conll(path)


def test_from_tfds():
  rows = [
    {
      "tokens": np.array([b"EU", b"rejects", b"German"], dtype=object),
      "ner": np.array([3, 0, 7]),
      "pos": np.array([22, 42, 16]),
    }
  ]
  assert conll.from_tfds(rows, TFDS_NAMES) == [
    {"tokens": ["EU", "rejects", "German"], "ner_tags": ["B-ORG", "O", "B-MISC"]}
  ]
  with pytest.raises(DataError, match=r"example 0 has ner id 9"):
    conll.from_tfds([{"tokens": [b"x"], "ner": [9]}], TFDS_NAMES)


# ----------------------------------------------------------------------------- encode


def test_labels_on_first_sub_token_only(examples, tok):
  tags = conll.tags_of(examples)
  label_ids = {t: i for i, t in enumerate(tags)}
  seq_len = 48
  arrays, truncated = conll.encode(examples, label_ids, tok, seq_len)
  assert truncated == 0
  assert set(arrays) == {"inputs", "type_ids", "input_mask", "labels", "word_index"}
  assert all(a.shape == (3, seq_len) and a.dtype == np.int32 for a in arrays.values())
  cls, sep, pad = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
  for row, example in enumerate(examples):
    inputs, labels, words = [cls], [-1], [-1]
    for w, (word, tag) in enumerate(zip(example["tokens"], example["ner_tags"])):
      pieces = _pieces(tok, word)
      inputs += pieces
      labels += [label_ids[tag]] + [-1] * (len(pieces) - 1)
      words += [w] + [-1] * (len(pieces) - 1)
    inputs.append(sep)
    rest = seq_len - len(inputs)
    assert arrays["inputs"][row].tolist() == inputs + [pad] * rest
    assert arrays["labels"][row].tolist() == labels + [-1] * (rest + 1)
    assert arrays["word_index"][row].tolist() == words + [-1] * (rest + 1)
    assert arrays["input_mask"][row].tolist() == [1] * len(inputs) + [0] * rest
  assert not arrays["type_ids"].any()
  # "1996-08-22" is five pieces at least (BERT splits punctuation): one label, then -1s.
  date = _pieces(tok, "1996-08-22")
  first = 1 + len(_pieces(tok, "BRUSSELS"))
  assert len(date) >= 5
  assert arrays["labels"][2, first : first + len(date)].tolist() == [label_ids["O"]] + [-1] * (
    len(date) - 1
  )
  assert arrays["labels"][2, 1] == label_ids["B-LOC"]


def test_truncation_and_word_predictions_round_trip(examples, tok):
  tags = conll.tags_of(examples)
  label_ids = {t: i for i, t in enumerate(tags)}
  lengths = [[len(_pieces(tok, w)) for w in e["tokens"]] for e in examples]
  assert lengths[0][5] >= 2  # "boycott" is several pieces
  # The window ends one piece into "boycott" short of its end: "British" onwards are lost.
  seq_len = 1 + sum(lengths[0][:6])
  arrays, truncated = conll.encode(examples, tags, tok, seq_len)  # a list works as label_ids
  assert truncated == sum(sum(n) > seq_len - 2 for n in lengths) >= 1
  assert (arrays["inputs"][:, -1] != tok.token_to_id("[PAD]")).any()
  preds = np.where(arrays["labels"] >= 0, arrays["labels"], label_ids["B-PER"])
  out = conll.word_predictions(preds, arrays, examples, tags)
  for example, got, n in zip(examples, out, lengths):
    starts = np.cumsum([1] + n[:-1])  # each word's first position after [CLS]
    kept = starts <= seq_len - 2
    expected = [t if k else "O" for t, k in zip(example["ner_tags"], kept)]
    assert got == expected and len(got) == len(example["tokens"])
  # The cut word "boycott" keeps its prediction; "British lamb ." (B-MISC O O) are lost -> "O".
  assert out[0] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "O", "O", "O"]
  assert examples[0]["ner_tags"][6] == "B-MISC"


def test_word_predictions_use_the_first_sub_token(examples, tok):
  tags = conll.tags_of(examples)
  arrays, _ = conll.encode(examples[2:], tags, tok, 32)
  preds = np.zeros_like(arrays["labels"])
  date_start = 1 + len(_pieces(tok, "BRUSSELS"))
  preds[0, date_start + 1 :] = tags.index("I-PER")  # later pieces must not count
  preds[0, date_start] = tags.index("B-LOC")
  assert conll.word_predictions(preds, arrays, examples[2:], tags) == [["O", "B-LOC"]]


def test_unknown_tag(examples, tok):
  label_ids = {"O": 0, "B-ORG": 1}
  with pytest.raises(
    DataError,
    match=r"config\.data\.files: sentence 1 \(word 'German'\): tag "
    r"'B-MISC' is not in the training set's tags \(O, B-ORG\)",
  ):
    conll.encode(examples, label_ids, tok, 32)
