"""Labelled data for fine-tuning: a prepared tfds dataset and local files give the same rows;
rows are encoded once and cached; batches are step-indexed (a resumed run sees the same)."""

import os
import random

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import tokenizer
from input_pipeline.finetuning import task_data

WORDS = ["alice", "bob", "likes", "sees", "green", "red", "apples", "boats", "the", "old"]


def _examples(n, seed):
  r = random.Random(seed)
  return [
    {
      "sentence": " ".join(r.choice(WORDS) for _ in range(r.randint(3, 9))),
      "label": r.randrange(2),
      "idx": i,
    }
    for i in range(n)
  ]


class GlueSst2Fixture(tfds.core.GeneratorBasedBuilder):
  """A real tfds builder with the features of tfds `glue/sst2`."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "sentence": tfds.features.Text(),
          "idx": np.int32,
          "label": tfds.features.ClassLabel(names=["negative", "positive"]),
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(0, 40), "validation": self._generate_examples(1, 12)}

  def _generate_examples(self, seed, n):
    for example in _examples(n, seed):
      yield example["idx"], example


def _config(data_dir, **data):
  from configs.finetune import glue

  config = glue.get_config("sst2,size=smoke")
  config.data.update(data_dir=data_dir, **data)
  config.batch.update(size=8, seq_len=16)
  return config


def _write_tsv(path, examples):
  with open(path, "w", encoding="utf-8") as f:
    f.write("sentence\tlabel\n" + "".join(f"{e['sentence']}\t{e['label']}\n" for e in examples))
  return str(path)


@pytest.fixture(scope="module")
def tok():
  return tokenizer._train_wordpiece([" ".join(WORDS)] * 5, 60, True)


def test_tfds_dataset_and_files_give_the_same_rows(tmp_path, tok):
  tfds_dir = str(tmp_path / "tfds")
  GlueSst2Fixture(data_dir=tfds_dir).download_and_prepare(file_format="array_record")
  _, train, val, notes = task_data.load(
    _config(tfds_dir, dataset="glue_sst2_fixture"), _sst2_format(), tok
  )
  files = (
    _write_tsv(tmp_path / "train.tsv", _examples(40, 0))
    + ","
    + _write_tsv(tmp_path / "dev.tsv", _examples(12, 1))
  )
  _, train2, val2, _ = task_data.load(
    _config(str(tmp_path / "d2"), files=files), _sst2_format(), tok
  )
  assert train.num_examples == 40 and val[""].num_examples == 12
  for a, b in ((train, train2), (val[""], val2[""])):
    order = np.argsort([e["idx"] for e in a.source])  # tfds stores examples shuffled
    for k in ("inputs", "type_ids", "input_mask", "labels"):
      np.testing.assert_array_equal(a.arrays[k][order], b.arrays[k])
  assert sorted(e["sentence"] for e in val[""].source) == sorted(
    e["sentence"] for e in _examples(12, 1)
  )
  assert notes[0].startswith("data sst2 train: 40 examples, 40 rows of 16 tokens")


def _sst2_format():
  from pretrain.objectives import tasks

  return tasks.GLUE_FORMAT


def test_rows_are_encoded_once_and_cached(tmp_path, tok, monkeypatch):
  files = (
    _write_tsv(tmp_path / "train.tsv", _examples(30, 0))
    + ","
    + _write_tsv(tmp_path / "dev.tsv", _examples(10, 1))
  )
  config = _config(str(tmp_path / "data"), files=files)
  _, first, _, _ = task_data.load(config, _sst2_format(), tok)
  cached = sorted(os.listdir(tmp_path / "data" / "finetune"))
  assert len(cached) == 2  # the train and eval splits
  calls = []
  fmt = _sst2_format()
  counting = task_data.TaskFormat(**{**fmt.__dict__, "encode": lambda *a: calls.append(a)})
  _, again, _, _ = task_data.load(config, counting, tok)
  assert not calls  # read back from the cache
  np.testing.assert_array_equal(first.arrays["inputs"], again.arrays["inputs"])
  # Another sequence length is another encoding.
  config.batch.seq_len = 12
  task_data.load(config, _sst2_format(), tok)
  assert len(os.listdir(tmp_path / "data" / "finetune")) == 4


def test_batches_are_step_indexed(tmp_path, tok):
  files = (
    _write_tsv(tmp_path / "train.tsv", _examples(20, 0))
    + ","
    + _write_tsv(tmp_path / "dev.tsv", _examples(6, 1))
  )
  _, train, val, _ = task_data.load(
    _config(str(tmp_path / "data"), files=files), _sst2_format(), tok
  )
  # Two epochs of 20 examples in batches of 8: each epoch a permutation of all examples.
  rows = [train.examples(np.arange(20 * e, 20 * (e + 1)), 0, 0, None)["inputs"] for e in (0, 1)]
  for epoch_rows in rows:
    assert sorted(map(tuple, epoch_rows)) == sorted(map(tuple, train.arrays["inputs"]))
  assert not np.array_equal(rows[0], rows[1])  # a fresh order each epoch
  # The batch of a step is the same from a fresh loader (a resumed run) and for any rows split.
  _, again, _, _ = task_data.load(_config(str(tmp_path / "data"), files=files), _sst2_format(), tok)
  np.testing.assert_array_equal(train.batch(3)["inputs"], again.batch(3)["inputs"])
  np.testing.assert_array_equal(
    train.batch(3, rows=[4, 5])["inputs"], train.batch(3)["inputs"][4:6]
  )
  # Evaluation reads in order.
  np.testing.assert_array_equal(val[""].eval_batch(0)["inputs"][:6], val[""].arrays["inputs"])


def test_packed_rows_hold_every_example_once_and_map_back(tmp_path, tok):
  files = (
    _write_tsv(tmp_path / "train.tsv", _examples(40, 0))
    + ","
    + _write_tsv(tmp_path / "dev.tsv", _examples(12, 1))
  )
  config = _config(str(tmp_path / "data"), files=files)
  config.batch.seq_len = 32
  config.data.pack_examples = True
  _, train, val, notes = task_data.load(config, _sst2_format(), tok)
  assert train.num_examples < 20 and train.packing.segments >= 3  # rows, of several examples
  assert "examples a row" in notes[0] and "padding, against" in notes[0], notes[0]
  # The same encoding (and cache) as unpacked; every example's tokens once, at its place.
  config.data.pack_examples = False
  _, plain, _, _ = task_data.load(config, _sst2_format(), tok)
  np.testing.assert_array_equal(train.arrays["inputs"], plain.arrays["inputs"])
  assert len(os.listdir(tmp_path / "data" / "finetune")) == 2
  p, rows = train.packing, train.rows
  for i in range(40):
    n = p.length[i]
    assert n == train.arrays["input_mask"][i].sum()
    np.testing.assert_array_equal(
      rows["inputs"][p.row[i], p.start[i] : p.start[i] + n], train.arrays["inputs"][i, :n]
    )
    assert rows["positions"][p.row[i], p.start[i] + n - 1] == n - 1
    assert rows["cls_positions"][p.row[i], p.slot[i]] == p.start[i]
    assert rows["labels"][p.row[i], p.slot[i]] == train.arrays["labels"][i]
    assert set(rows["segment_ids"][p.row[i], p.start[i] : p.start[i] + n]) == {p.slot[i] + 1}
  assert rows["segment_weights"].sum() == 40 and rows["input_mask"].sum() == p.length.sum()
  assert sorted(p.row * 100 + p.slot) == sorted(set(p.row * 100 + p.slot))  # one slot each
  # Training rows are packed from a seeded shuffle, evaluation rows in order; a batch holds
  # packed rows, and the rows' predictions map back to one per example.
  assert (np.diff(val[""].packing.row) >= 0).all() and (np.diff(p.row) < 0).any()
  batch = train.batch(1)
  assert batch["inputs"].shape == (8, 32) and batch["cls_positions"].shape == (8, p.segments)
  v = val[""].packing
  per_row = {"labels": np.where(v.arrays["segment_weights"] > 0, 7, 0)}
  per_row["labels"][v.row, v.slot] = np.arange(12)
  per_row["tokens"] = val[""].rows["inputs"]
  back = val[""].per_example(per_row)
  np.testing.assert_array_equal(back["labels"], np.arange(12))
  real = val[""].arrays["input_mask"].astype(bool)
  np.testing.assert_array_equal(back["tokens"][real], val[""].arrays["inputs"][real])
  assert (back["tokens"][~real] == -1).all()
