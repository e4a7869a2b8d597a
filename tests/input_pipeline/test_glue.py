"""GLUE readers and encoding (input_pipeline/finetuning/glue.py), on files in GLUE's original layouts."""

import pathlib

import ml_collections
import numpy as np
import pytest

from input_pipeline import tokenizer
from input_pipeline.corpora import sources
from input_pipeline.finetuning import glue
from pretrain.objectives import tasks

DataError = sources.DataError
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"

SST2 = (
  "sentence\tlabel\n"
  "it 's a charming and often affecting journey . \t1\n"
  "unflinchingly bleak and desperate \t0\n"
  'the " quoted " film is a wry , wonderful mess \t1\n'
)
SST2_TEST = "index\tsentence\n0\tuneasy mishmash of styles and genres .\n1\ta fine film .\n"
COLA = (
  "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
  "gj04\t0\t*\tOne more pseudo generalization and I'm giving up.\n"
)
COLA_TEST = "index\tsentence\n0\tBill whistled past the house.\n"
MRPC = (
  "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
  '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of '
  'deliberately distorting his evidence .\tReferring to him as only " the witness " , '
  "Amrozi accused his brother of deliberately distorting his evidence .\n"
  "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway .\t"
  "Yucaipa bought Dominick 's in 1995 for $ 693 million .\n"
)
STSB = (
  "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
  "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\t"
  "An air plane is taking off.\t5.000\n"
  "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\t"
  "A man is playing a bamboo flute.\t3.800\n"
)
STSB_TEST = (
  "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\n"
  "0\tmain-captions\tMSRvid\t2012test\t0024\tnone\tnone\tA girl is styling her hair."
  "\tA girl is brushing her hair.\n"
)
_MNLI_HEAD = (
  "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
  "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
  "label4\tlabel5\tgold_label\n"
)


def _mnli_row(i, premise, hypothesis, gold):
  return (
    f"{i}\t{i}\t{i}n\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t{premise}\t{hypothesis}\t"
    f"{gold}\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}\n"
  )


MNLI = (
  _MNLI_HEAD
  + _mnli_row(0, "The new rights are nice enough", "Everyone really likes the rights.", "neutral")
  + _mnli_row(
    1,
    "This site includes a list of all award winners.",
    "The site has a list of winners.",
    "entailment",
  )
  + _mnli_row(2, "uh i don't know i i have mixed emotions", "I like it a lot.", "contradiction")
)
QNLI = (
  "index\tquestion\tsentence\tlabel\n"
  "0\tWhat came into force after the new constitution?\tThe law came into force.\t"
  "entailment\n"
  "1\tWhat is the first major city?\tThe stream flows through Bern.\tnot_entailment\n"
)

ALL_TEXT = [SST2, SST2_TEST, COLA, MRPC, STSB, MNLI, QNLI]


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


@pytest.fixture(scope="module")
def tok():
  return tokenizer._train_wordpiece(ALL_TEXT, 300, True)


def _ids(tok, text):
  return tok.encode(text, add_special_tokens=False).ids


# ----------------------------------------------------------------------------- tasks


def test_tasks_cover_glue_with_tfds_names():
  assert set(glue.TASKS) >= {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
  assert glue.TASKS["mnli"].text_keys == ("premise", "hypothesis")
  assert glue.TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
  assert glue.TASKS["mnli"].eval_split == "validation_matched"
  assert glue.TASKS["qnli"].text_keys == ("question", "sentence")
  assert glue.TASKS["rte"].label_names == ("entailment", "not_entailment")
  assert glue.TASKS["stsb"].num_labels == 1 and glue.TASKS["stsb"].metrics == (
    "pearson",
    "spearman",
  )
  assert glue.TASKS["cola"].metrics == ("matthews",)
  assert glue.TASKS["mrpc"].metrics == ("accuracy", "f1")
  assert glue.TASKS["qqp"].text_keys == ("question1", "question2")
  with pytest.raises(DataError, match=r"config\.data\.task: unknown GLUE task 'sst3'"):
    glue.get_task("sst3")


# ----------------------------------------------------------------------------- read_tsv


def test_read_sst2_train_and_test(tmp_path):
  rows = glue.read_tsv(_write(tmp_path, "train.tsv", SST2), "sst2")
  assert [r["label"] for r in rows] == [1, 0, 1]
  assert [r["idx"] for r in rows] == [0, 1, 2]
  assert rows[1] == {"sentence": "unflinchingly bleak and desperate ", "label": 0, "idx": 1}
  assert rows[2]["sentence"] == 'the " quoted " film is a wry , wonderful mess '  # QUOTE_NONE
  test = glue.read_tsv(_write(tmp_path, "test.tsv", SST2_TEST), glue.TASKS["sst2"])
  assert test == [
    {"sentence": "uneasy mishmash of styles and genres .", "label": -1, "idx": 0},
    {"sentence": "a fine film .", "label": -1, "idx": 1},
  ]


def test_read_cola_without_header_and_its_test_file(tmp_path):
  rows = glue.read_tsv(_write(tmp_path, "dev.tsv", COLA), "cola")
  assert len(rows) == 2
  assert rows[0]["sentence"].startswith("Our friends won't buy") and rows[0]["label"] == 1
  assert rows[1] == {
    "sentence": "One more pseudo generalization and I'm giving up.",
    "label": 0,
    "idx": 1,
  }
  test = glue.read_tsv(_write(tmp_path, "test.tsv", COLA_TEST), "cola")
  assert test == [{"sentence": "Bill whistled past the house.", "label": -1, "idx": 0}]


def test_read_mrpc_pairs(tmp_path):
  rows = glue.read_tsv(_write(tmp_path, "dev.tsv", MRPC), "mrpc")
  assert [r["label"] for r in rows] == [1, 0]
  assert rows[0]["sentence1"].startswith('Amrozi accused his brother , whom he called " the')
  assert rows[0]["sentence2"].startswith("Referring to him as only")
  assert rows[1]["sentence2"] == "Yucaipa bought Dominick 's in 1995 for $ 693 million ."
  assert set(rows[0]) == {"sentence1", "sentence2", "label", "idx"}


def test_read_stsb_scores(tmp_path):
  rows = glue.read_tsv(_write(tmp_path, "dev.tsv", STSB), "stsb")
  assert [r["label"] for r in rows] == [5.0, 3.8]
  assert isinstance(rows[1]["label"], float)
  assert rows[1]["sentence1"] == "A man is playing a flute."
  assert rows[1]["sentence2"] == "A man is playing a bamboo flute."
  test = glue.read_tsv(_write(tmp_path, "test.tsv", STSB_TEST), "stsb")
  assert test[0]["label"] == -1 and test[0]["sentence2"] == "A girl is brushing her hair."


def test_read_mnli_and_qnli_string_labels(tmp_path):
  rows = glue.read_tsv(_write(tmp_path, "dev_matched.tsv", MNLI), "mnli")
  assert [r["label"] for r in rows] == [1, 0, 2]  # neutral, entailment, contradiction
  assert rows[1]["premise"] == "This site includes a list of all award winners."
  assert rows[1]["hypothesis"] == "The site has a list of winners."
  qnli = glue.read_tsv(_write(tmp_path, "qnli.tsv", QNLI), "qnli")
  assert [r["label"] for r in qnli] == [0, 1]
  assert qnli[1]["question"] == "What is the first major city?"
  assert qnli[1]["sentence"] == "The stream flows through Bern."


def test_label_outside_the_set_names_file_and_line(tmp_path):
  path = _write(tmp_path, "dev.tsv", SST2 + "a bad row \t3\n")
  with pytest.raises(DataError) as e:
    glue.read_tsv(path, "sst2")
  message = str(e.value)
  assert message.startswith("config.data.files: ") and "\n" not in message
  assert f"{path} line 5: label '3' is not one of 0, 1 (sst2)" in message
  bad = MNLI + _mnli_row(3, "a", "b", "maybe")
  with pytest.raises(
    DataError,
    match=r"mnli\.tsv line 5: label 'maybe' is not one of "
    r"entailment, neutral, contradiction \(mnli\)",
  ):
    glue.read_tsv(_write(tmp_path, "mnli.tsv", bad), "mnli")
  bad = STSB.replace("\t3.800", "\t7.5")
  with pytest.raises(DataError, match=r"stsb\.tsv line 3: label '7\.5' is not a number"):
    glue.read_tsv(_write(tmp_path, "stsb.tsv", bad), "stsb")


def test_row_with_too_few_columns(tmp_path):
  path = _write(tmp_path, "train.tsv", SST2 + "no tab on this line\n")
  with pytest.raises(
    DataError,
    match=r"config\.data\.files: .*train\.tsv line 5: the row has 1 "
    r"of the 2 tab-separated columns sst2 reads",
  ):
    glue.read_tsv(path, "sst2")
  with pytest.raises(DataError, match=r"cola\.tsv line 2: the row has 2 of the 4"):
    glue.read_tsv(_write(tmp_path, "cola.tsv", COLA.splitlines(True)[0] + "gj04\t0\n"), "cola")


def test_pair_task_on_a_one_text_file(tmp_path):
  path = _write(tmp_path, "sst2.tsv", SST2)
  with pytest.raises(DataError) as e:
    glue.read_tsv(path, "mrpc")
  assert str(e.value).startswith(
    f"config.data.task: mrpc is a sentence-pair task but {path} has one text column"
  )


def test_wrong_layout_names_missing_column(tmp_path):
  path = _write(tmp_path, "qnli.tsv", QNLI)
  with pytest.raises(DataError, match=r"qnli\.tsv line 1: the header has no column 'sentence1'"):
    glue.read_tsv(path, "rte")


# ----------------------------------------------------------------------------- from_tfds


def test_from_tfds_normalises_types():
  rows = [
    {
      "sentence1": b"A plane is taking off.",
      "sentence2": np.bytes_(b"An air plane."),
      "label": np.float32(3.8),
      "idx": np.int32(7),
    }
  ]
  out = glue.from_tfds(rows, "stsb")
  assert out == [
    {
      "sentence1": "A plane is taking off.",
      "sentence2": "An air plane.",
      "label": pytest.approx(3.8),
      "idx": 7,
    }
  ]
  assert type(out[0]["label"]) is float and type(out[0]["idx"]) is int
  out = glue.from_tfds(
    [
      {"premise": b"p", "hypothesis": b"h", "label": np.int64(2), "idx": np.int32(0)},
      {"premise": b"q", "hypothesis": b"i", "label": np.int64(-1), "idx": np.int32(1)},
    ],
    "mnli",
  )
  assert [r["label"] for r in out] == [2, -1] and type(out[0]["label"]) is int
  assert out[0]["premise"] == "p"


def test_from_tfds_label_checks():
  with pytest.raises(DataError, match=r"glue/sst2 example idx 4: label 2 is not one of 0, 1"):
    glue.from_tfds([{"sentence": b"x", "label": np.int64(2), "idx": np.int32(4)}], "sst2")
  with pytest.raises(DataError, match=r"no 'sentence2' feature"):
    glue.from_tfds([{"sentence1": b"x", "label": 0, "idx": 0}], "rte")


# ----------------------------------------------------------------------------- encode


def test_encode_pair_exact(tmp_path, tok):
  rows = glue.read_tsv(_write(tmp_path, "dev.tsv", STSB), "stsb")
  seq_len = 40
  arrays, truncated = glue.encode(rows, "stsb", tok, seq_len)
  assert truncated == 0
  cls, sep, pad = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
  a, b = _ids(tok, rows[1]["sentence1"]), _ids(tok, rows[1]["sentence2"])
  expected = [cls] + a + [sep] + b + [sep]
  n = len(expected)
  assert arrays["inputs"].shape == (2, seq_len) and arrays["inputs"].dtype == np.int32
  assert arrays["inputs"][1].tolist() == expected + [pad] * (seq_len - n)
  assert arrays["type_ids"][1].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1) + [0] * (
    seq_len - n
  )
  assert arrays["input_mask"][1].tolist() == [1] * n + [0] * (seq_len - n)
  assert arrays["labels"].dtype == np.float32
  np.testing.assert_allclose(arrays["labels"], [5.0, 3.8], rtol=1e-6)


def test_encode_single_and_int_labels(tmp_path, tok):
  rows = glue.read_tsv(_write(tmp_path, "train.tsv", SST2), "sst2")
  arrays, truncated = glue.encode(rows, "sst2", tok, 32)
  assert truncated == 0
  assert arrays["labels"].dtype == np.int32 and arrays["labels"].tolist() == [1, 0, 1]
  a = _ids(tok, rows[0]["sentence"])
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  assert arrays["inputs"][0, : len(a) + 2].tolist() == [cls] + a + [sep]
  assert not arrays["type_ids"].any()
  assert arrays["input_mask"][0].sum() == len(a) + 2


def test_encode_truncates_single_from_the_end(tok):
  rows = [{"sentence": "it 's a charming and often affecting journey .", "label": 1, "idx": 0}]
  a = _ids(tok, rows[0]["sentence"])
  assert len(a) > 5
  arrays, truncated = glue.encode(rows, "sst2", tok, 6)
  assert truncated == 1
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  assert arrays["inputs"][0].tolist() == [cls] + a[:4] + [sep]


def _pair(a, b):
  return [{"sentence1": a, "sentence2": b, "label": 1, "idx": 0}]


def test_longest_first_truncation(tok):
  cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
  long_text = "Amrozi accused his brother , whom he called the witness , of deliberately"
  short_text = "a fine film ."
  a, b = _ids(tok, long_text), _ids(tok, short_text)
  assert len(a) > len(b) + 4
  # The long one alone is cut down to the short one's length (b untouched).
  seq_len = 3 + 2 * len(b)
  arrays, truncated = glue.encode(_pair(long_text, short_text), "rte", tok, seq_len)
  assert truncated == 1
  assert arrays["inputs"][0].tolist() == [cls] + a[: len(b)] + [sep] + b + [sep]
  # Swapped: the long second text is the one cut.
  arrays, _ = glue.encode(_pair(short_text, long_text), "rte", tok, seq_len + 1)
  assert arrays["inputs"][0].tolist() == [cls] + b + [sep] + a[: len(b) + 1] + [sep]
  assert arrays["type_ids"][0].tolist() == [0] * (len(b) + 2) + [1] * (len(b) + 2)
  # Equal lengths, odd budget: both are cut, b first on ties, so a keeps one more.
  arrays, _ = glue.encode(_pair(long_text, long_text), "rte", tok, 3 + 7)
  assert arrays["inputs"][0].tolist() == [cls] + a[:4] + [sep] + a[:3] + [sep]
  assert glue.truncate_pair(range(6), range(6), 7) == (4, 3)
  assert glue.truncate_pair(range(10), range(2), 7) == (5, 2)
  assert glue.truncate_pair(range(3), range(3), 7) == (3, 3)


def test_encode_needs_room(tok):
  with pytest.raises(DataError, match=r"config\.batch\.seq_len: 3"):
    glue.encode(_pair("a", "b"), "rte", tok, 3)


# ----------------------------------------------------------------------------- real data


def test_real_sst2_dev():
  path = SHARED_DATA / "sst2" / "dev.tsv"
  if not path.exists():
    pytest.skip("../shared/data/sst2/dev.tsv absent")
  rows = glue.read_tsv(str(path), "sst2")
  assert len(rows) == 872
  assert {r["label"] for r in rows} == {0, 1}
  assert rows[0]["sentence"].startswith("it 's a charming and often affecting journey")
  assert rows[-1]["idx"] == 871


def test_a_window_that_cuts_most_examples_warns_on_a_line_of_its_own(tmp_path, tok):
  """A count of truncated examples is a note; most of a split truncated is a warning: a
  window too small for the data is almost always a mistake."""
  sentences = ["a fine film .", "a fine film . " * 3, "a fine film . " * 6]  # 3 lengths
  tsv = "sentence\tlabel\n" + "".join(f"{t.strip()}\t1\n" for t in sentences)
  examples = glue.read_tsv(_write(tmp_path, "train.tsv", tsv), "sst2")
  data = ml_collections.ConfigDict({"task": "sst2"})
  lengths = [len(_ids(tok, e["sentence"])) + 2 for e in examples]  # with [CLS] [SEP]
  assert lengths[0] < lengths[1] < lengths[2]
  _, notes = tasks.GLUE_FORMAT.encode(examples, tok, data, lengths[0], True)
  assert notes[0] == "2 examples truncated to the window"
  assert notes[1].startswith(
    f"warning: 2 of 3 examples (67%) lose tokens to the {lengths[0]}-token window"
  )
  assert "config.batch.seq_len" in notes[1]
  _, notes = tasks.GLUE_FORMAT.encode(examples, tok, data, lengths[2] - 1, True)
  assert notes == ["1 examples truncated to the window"]  # a third: no warning
