"""Fine-tuning end to end on the one trainer: GLUE from a pretrained BERT (backbone loaded,
head initialised, best checkpoint, results.json, predictions), NER and QA from scratch on small
fixtures (they must beat chance by a margin), and bad input refused before compiling."""

import csv
import json
import os
import random

import numpy as np
import pytest

from tests.helpers import ADJS, COMPILES, NAMES, NOUNS, VERBS, tiny_bert_config, write_sst

pytestmark = pytest.mark.xdist_group("finetune")  # one worker builds the shared run


def _tiny(config, **overrides):
  """A fine-tuning config shrunk to the tiny pretraining model of tests/helpers.py."""
  config.model.update(num_layers=2, num_heads=2, d_model=32, max_len=32, dropout=0.0)
  config.batch.update(size=16, seq_len=32)
  config.optimizer.lr = 1e-3
  config.train.update(log_every=10, peak_flops=1e12)
  config.checkpoint.async_save = False
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def bert_run(data_dir, sentence_corpus, tmp_path_factory):
  from pretrain.training import trainer

  workdir = str(tmp_path_factory.mktemp("bert") / "run")
  trainer.train_and_evaluate(tiny_bert_config(data_dir, sentence_corpus), workdir)
  return workdir


def _glue(tmp_path, data_dir, **overrides):
  from configs.finetune import glue

  files = overrides.pop("files", None) or (
    write_sst(tmp_path / "train.tsv", 400, 0) + "," + write_sst(tmp_path / "dev.tsv", 100, 1)
  )
  config = _tiny(glue.get_config("sst2"), **overrides)
  config.data.update(files=files, data_dir=data_dir)
  config.train.epochs = 3
  return config


@pytest.mark.slow
def test_glue_from_a_pretrained_bert(bert_run, data_dir, tmp_path, capsys):
  from pretrain import evaluate
  from pretrain.state import checkpointer, run_files
  from pretrain.training import trainer

  workdir = str(tmp_path / "sst2")
  result = trainer.train_and_evaluate(_glue(tmp_path, data_dir, init_from=bert_run), workdir)
  out = capsys.readouterr().out
  assert "(initialised fresh: classifier); training for 75 steps" in out  # 3 x 400 / 16
  assert result.step == 75 and result.metrics["eval_accuracy"] >= 0.9, out

  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    record = json.load(f)
  assert [r["step"] for r in record["history"]] == [25, 50, 75]  # once per epoch
  assert [r["epoch"] for r in record["history"]] == [1.0, 2.0, 3.0]
  best = max(record["history"], key=lambda r: r["accuracy"])
  assert record["best"] == best and record["best_metric"] == "accuracy"
  assert "best accuracy (max)" in out
  best_ckpt = checkpointer.Checkpointer(os.path.join(workdir, "best"), read_only=True)
  assert best_ckpt.all_steps() == [best["step"]]
  best_ckpt.close()

  # The model is init_from's: its config.json records it, and evaluate reads the run alone.
  config = run_files.run_config(workdir)
  assert config.model.d_model == 32 and config.model.size == "smoke"
  predictions = str(tmp_path / "SST-2.tsv")
  results = evaluate.evaluate_run(config, workdir, evaluate.Options(best=True, predict=predictions))
  assert results[best["step"]]["accuracy"] == pytest.approx(best["accuracy"])
  with open(predictions, encoding="utf-8") as f:
    rows = list(csv.reader(f, delimiter="\t"))
  with open(tmp_path / "dev.tsv", encoding="utf-8") as f:
    gold = [int(r[1]) for r in list(csv.reader(f, delimiter="\t"))[1:]]
  assert rows[0] == ["index", "prediction"] and [int(r[0]) for r in rows[1:]] == list(range(100))
  accuracy = np.mean([int(r[1]) == g for r, g in zip(rows[1:], gold)])
  assert accuracy == pytest.approx(best["accuracy"])

  # The dev set packed several examples a row gives the same predictions and metrics.
  config.data.pack_examples = True
  packed_predictions = str(tmp_path / "SST-2-packed.tsv")
  packed = evaluate.evaluate_run(
    config, workdir, evaluate.Options(best=True, predict=packed_predictions)
  )
  assert packed[best["step"]]["accuracy"] == pytest.approx(best["accuracy"])
  assert packed[best["step"]]["loss"] == pytest.approx(results[best["step"]]["loss"], rel=1e-5)
  with open(packed_predictions, encoding="utf-8") as f:
    assert list(csv.reader(f, delimiter="\t")) == rows


def _fails_before_compiling(config, workdir, error, *fields):
  from pretrain.training import trainer

  COMPILES.clear()
  with pytest.raises(error) as info:
    trainer.train_and_evaluate(config, workdir)
  message = str(info.value)
  assert "\n" not in message and all(f in message for f in fields), message
  assert not COMPILES, f"compiled before failing: {message}"
  assert not os.path.exists(workdir)


def test_bad_input_is_refused_before_compiling(bert_run, data_dir, tmp_path):
  from configs.finetune import glue
  from input_pipeline.corpora import sources
  from pretrain.ground import errors
  from pretrain.objectives import tasks
  from pretrain.state import checkpointer

  workdir = str(tmp_path / "run")
  files = write_sst(tmp_path / "t.tsv", 50, 0) + "," + write_sst(tmp_path / "d.tsv", 20, 1)
  # A label count that differs from the head's.
  config = _glue(tmp_path, data_dir, init_from=bert_run, files=files)
  config.model.num_labels = 3
  _fails_before_compiling(config, workdir, tasks.TaskError, "config.model.num_labels", "sst2")
  # A label outside the task's label set (the file and line named).
  bad = write_sst(tmp_path / "bad.tsv", 20, 1, bad_label=True)
  config = _glue(tmp_path, data_dir, init_from=bert_run, files=f"{bad},{bad}")
  _fails_before_compiling(config, workdir, sources.DataError, "bad.tsv", "line 21")
  # Another width than the checkpoint's (the size named explicitly, not taken from it).
  config = _tiny(glue.get_config("sst2,size=smoke"), init_from=bert_run)
  config.model.d_model = 64
  config.data.update(files=files, data_dir=data_dir)
  _fails_before_compiling(
    config, workdir, checkpointer.CheckpointError, "config.model.d_model", "d_model=32"
  )
  # A pair task given single sentences.
  config = _tiny(glue.get_config("mrpc"), init_from=bert_run)
  config.data.update(files=files, data_dir=data_dir)
  _fails_before_compiling(config, workdir, errors.UserError, "config.data.task", "mrpc")
  # The model of init_from, without init_from.
  config = _glue(tmp_path, data_dir, files=files)
  _fails_before_compiling(config, workdir, checkpointer.CheckpointError, "config.model.size")


@pytest.mark.parametrize("vocabulary", ["bert", "gpt"])
def test_a_decoder_checkpoint_is_refused(bert_run, data_dir, tmp_path, vocabulary):
  """A GPT run's checkpoint (a real orbax checkpoint whose meta is a decoder's), with BERT's
  vocabulary or its own: that it is a decoder is said first, before its vocabulary lacks
  [CLS] and the rest."""
  import jax.numpy as jnp

  from configs import gpt
  from input_pipeline import tokenizer
  from models import model_config
  from pretrain.state import checkpointer, run_files

  gpt_dir = tmp_path / "gpt"
  tok = (
    run_files.run_tokenizer(bert_run)
    if vocabulary == "bert"
    else tokenizer._train_bpe(["the quick brown fox"] * 20, 300, "<|endoftext|>")
  )
  gpt_config = gpt.get_config("smoke")
  model = model_config.resolve(gpt_config.model, tok.get_vocab_size())
  run_files.write_run_files(str(gpt_dir), gpt_config, model, tok)
  ckpt = checkpointer.Checkpointer(str(gpt_dir / "checkpoints"))
  ckpt.save(
    1,
    {"step": jnp.int32(1), "params": {"embed": {"embedding": jnp.zeros((4, 4))}}},
    run_files.run_meta(model, "tok", 1, 0),
    force=True,
  )
  ckpt.close()
  config = _glue(tmp_path, data_dir, init_from=str(gpt_dir))
  config.model.size = "smoke"  # an explicit size: the decoder's model is not taken
  _fails_before_compiling(
    config,
    str(tmp_path / "run"),
    checkpointer.CheckpointError,
    "config.init_from",
    "a decoder (GPT)",
    "an encoder (BERT)",
  )


def _write_conll(path, n, seed):
  """Sentences whose names are persons and nouns are products (CoNLL-2003 layout)."""
  r = random.Random(seed)
  lines = ["-DOCSTART- -X- -X- O", ""]
  for _ in range(n):
    first, second = r.sample(NAMES, 2)
    words = [
      (first, "B-PER"),
      (r.choice(VERBS), "O"),
      ("with", "O"),
      (second, "B-PER"),
      (r.choice(ADJS), "O"),
      (r.choice(NOUNS), "B-MISC"),
    ]
    lines += [f"{w} NN O {t}" for w, t in words] + [""]
  path.write_text("\n".join(lines))
  return str(path)


@pytest.mark.slow
def test_ner_from_scratch_beats_chance(data_dir, tmp_path):
  from configs.finetune import ner
  from pretrain.training import trainer

  config = _tiny(ner.get_config("smoke"))
  config.data.update(
    files=_write_conll(tmp_path / "train.conll", 300, 0)
    + ","
    + _write_conll(tmp_path / "dev.conll", 50, 1),
    data_dir=data_dir,
    labels="O,B-PER,I-PER,B-MISC,I-MISC",
  )
  config.data.tokenizer.vocab_size = 200
  config.model.num_labels = 5
  config.data.pack_examples = True  # about three sentences a row of 32
  config.batch.size = 8
  config.train.epochs = 6
  result = trainer.train_and_evaluate(config, str(tmp_path / "ner"))
  # Chance (a tag drawn by frequency per word) finds about a third of the entities.
  assert result.metrics["eval_f1"] > 0.8, result.metrics
  assert 0 <= result.metrics["eval_precision"] <= 1 and 0 <= result.metrics["eval_recall"] <= 1


def _write_squad(path, n, seed):
  """Paragraphs of 'name verb adjective noun' sentences; a question names a person and asks
  what they did: the answer is that person's adjective and noun."""
  r = random.Random(seed)
  paragraphs = []
  for k in range(n):
    people = r.sample(NAMES, 3)
    facts = [(p, r.choice(VERBS), r.choice(ADJS), r.choice(NOUNS)) for p in people]
    context = " ".join(f"{p} {v} {a} {o}." for p, v, a, o in facts)
    p, v, a, o = facts[r.randrange(3)]
    answer = f"{a} {o}"
    paragraphs.append(
      {
        "context": context,
        "qas": [
          {
            "id": f"q{k}",
            "question": f"what does {p} {v}?",
            "answers": [
              {"text": answer, "answer_start": context.index(f"{p} {v} {a}") + len(f"{p} {v} ")}
            ],
          }
        ],
      }
    )
  path.write_text(
    json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]})
  )
  return str(path)


@pytest.mark.slow
def test_squad_from_scratch_beats_chance(data_dir, tmp_path):
  from configs.finetune import squad
  from pretrain import evaluate
  from pretrain.state import run_files
  from pretrain.training import trainer

  config = _tiny(squad.get_config("smoke"))
  config.data.update(
    files=_write_squad(tmp_path / "train.json", 400, 0)
    + ","
    + _write_squad(tmp_path / "dev.json", 50, 1),
    data_dir=data_dir,
  )
  config.data.tokenizer.vocab_size = 200
  config.data.squad.update(doc_stride=8, max_query_len=8)
  config.train.epochs = 2
  workdir = str(tmp_path / "squad")
  trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    best = json.load(f)["best"]
  # A random span of the context (up to max_answer_len tokens) has F1 about 0.1 and EM about
  # 0.01. This small model learns where answers start and end (an adjective and its noun)
  # within an epoch, but not yet which of the three sentences the question names (its
  # loss settles near ln 3), so it scores about one in three.
  assert best["f1"] > 0.3 and best["exact_match"] > 0.1, best
  predictions = str(tmp_path / "predictions.json")
  evaluate.evaluate_run(
    run_files.run_config(workdir), workdir, evaluate.Options(predict=predictions)
  )
  with open(predictions, encoding="utf-8") as f:
    answers = json.load(f)
  assert sorted(answers) == sorted(f"q{k}" for k in range(50))
