"""pretrain.evaluate: equal to the trainer's evaluation on any mesh and layout, the whole split
with padding, --watch exactly once, and bad input refused before anything compiles."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from configs import common
from models import layer_stack
from pretrain import evaluate
from pretrain.state import checkpointer, run_files
from pretrain.training import trainer
from tests import helpers
from tests.helpers import COMPILES, xla_flags

pytestmark = pytest.mark.xdist_group("evaluate")  # one worker builds the shared run

EVAL_KEYS = ("loss", "perplexity", "accuracy", "bits_per_byte")


def _train(config, workdir, devices=1):
  return trainer.train_and_evaluate(config, str(workdir), devices=jax.devices()[:devices])


def _evaluate(workdir, devices=1, overrides=None, **options):
  config = common.apply_overrides(run_files.run_config(str(workdir)), overrides or {})
  return evaluate.evaluate_run(
    config, str(workdir), evaluate.Options(**options), devices=jax.devices()[:devices]
  )


def _rows(workdir):
  with open(os.path.join(workdir, "eval.jsonl")) as f:
    return [json.loads(line) for line in f]


def _assert_close(trained, evaluated, keys, rtol):
  for key in keys:
    np.testing.assert_allclose(evaluated[key], trained[f"eval_{key}"], rtol=rtol, err_msg=key)


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, data_dir):
  """A tiny GPT trained on one device: eval over 2 batches at the final step 6."""
  from tests.helpers import tiny_gpt_config

  workdir = tmp_path_factory.mktemp("gpt_run")
  result = _train(tiny_gpt_config(data_dir, **{"train.eval_batches": 2}), workdir)
  return workdir, result.metrics


@pytest.mark.slow
def test_gpt_equals_trainer_eval_on_any_mesh_and_layout(gpt_run):
  workdir, trained = gpt_run
  one = _evaluate(workdir, max_batches=2)[6]
  _assert_close(trained, one, EVAL_KEYS, rtol=1e-6)
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
  eight = _evaluate(workdir, devices=8, overrides=mesh, max_batches=2)[6]
  _assert_close(trained, eight, EVAL_KEYS, rtol=1e-6)
  # a scanned checkpoint evaluated by an unscanned model (its parameter tree converted)
  unscanned = _evaluate(workdir, overrides={"model.scan_layers": False}, max_batches=2)[6]
  _assert_close(trained, unscanned, EVAL_KEYS, rtol=1e-5)
  rows = [r for r in _rows(workdir) if r["step"] == 6]
  assert len(rows) == 3 and all(r["dataset"] == "all" and r["name"] == "eval" for r in rows)
  assert os.listdir(os.path.join(workdir, "tensorboard", "eval"))
  assert 0 < one["bits_per_byte"] < one["loss"] / np.log(2)  # BPE tokens cover > 1 byte


def test_whole_split_counts_every_example_once(gpt_run):
  """The last partial batch is padded with weight 0: the whole split's numbers do not depend
  on the batch size, and every window is counted once."""
  workdir, _ = gpt_run
  a = _evaluate(workdir, name="bs8")[6]
  b = _evaluate(workdir, name="bs24", overrides={"batch.size": 24})[6]
  for key in EVAL_KEYS:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  rows = {r["name"]: r for r in _rows(workdir)}
  windows = rows["bs8"]["examples"]
  assert windows == rows["bs24"]["examples"] and windows % 8 and windows % 24, windows


@pytest.mark.slow
def test_bert_equals_trainer_eval_on_any_mesh(tiny_bert, tmp_path, capsys):
  trained = _train(tiny_bert(), tmp_path).metrics
  step_lines = [l for l in capsys.readouterr().out.splitlines() if l.startswith("step 3/6 | loss")]
  assert (
    len(step_lines) == 1 and "| mlm_accuracy " in step_lines[0] and "| nsp_loss " in step_lines[0]
  )
  keys = ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "loss")
  _assert_close(trained, _evaluate(tmp_path, max_batches=2)[6], keys, rtol=1e-6)
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
  _assert_close(
    trained, _evaluate(tmp_path, devices=8, overrides=mesh, max_batches=2)[6], keys, rtol=1e-6
  )


def test_layer_stack_round_trip():
  params = {"embed": np.ones(3), "blocks": {"mlp": {"w": np.arange(12.0).reshape(3, 4)}}}
  unstacked = layer_stack.unstack(params)
  assert sorted(unstacked["blocks"]) == [0, 1, 2] and not layer_stack.is_stacked(unstacked)
  np.testing.assert_array_equal(unstacked["blocks"][1]["mlp"]["w"], [4.0, 5, 6, 7])
  again = layer_stack.to_layout(unstacked, scan=True)
  np.testing.assert_array_equal(again["blocks"]["mlp"]["w"], params["blocks"]["mlp"]["w"])
  assert layer_stack.to_layout(params, scan=True) is params


@pytest.mark.slow
def test_watch_evaluates_each_checkpoint_once_across_restarts(tiny_config, tmp_path, capsys):
  # trained under data=2 x fsdp=4 on 8 devices; evaluated on 1, where that mesh cannot be
  _train(tiny_config(**{"mesh.data": 2, "mesh.fsdp": 4}), tmp_path, devices=8)  # steps 3, 6
  assert sorted(_evaluate(tmp_path, watch=True, max_batches=1, poll_seconds=0.1)) == [3, 6]
  assert "evaluating data parallel" in capsys.readouterr().out
  assert _evaluate(tmp_path, watch=True, max_batches=1, poll_seconds=0.1) == {}  # restarted
  assert "--watch: the final step 6 is already evaluated" in capsys.readouterr().out
  assert sorted(r["step"] for r in _rows(tmp_path)) == [3, 6]


def _snapshot(workdir):
  return {
    os.path.relpath(os.path.join(d, f), workdir): os.stat(os.path.join(d, f)).st_mtime_ns
    for d, _, files in os.walk(workdir)
    for f in files
  }


@pytest.mark.parametrize(
  "overrides,options,error,fields",
  [
    ({"model.num_layers": 3}, {}, checkpointer.CheckpointError, ("config.model.num_layers",)),
    ({"data.tokenizer.vocab_size": 128}, {}, ValueError, ("config.data.tokenizer", "run's own")),
    ({}, {"step": 5}, evaluate.CheckpointError, ("--step", "step 5", "3, 6")),
    (
      {},
      {"step": 3, "all": True},
      evaluate.CheckpointError,
      ("--step, --all, --watch and --best",),
    ),
  ],
)
def test_bad_input_fails_before_compiling_and_writes_nothing(
  gpt_run, overrides, options, error, fields
):
  workdir, _ = gpt_run
  before = _snapshot(workdir)
  COMPILES.clear()
  with pytest.raises(error) as info:
    _evaluate(workdir, overrides=overrides, **options)
  message = str(info.value)
  assert "\n" not in message and all(f in message for f in fields), message
  assert not COMPILES, message
  assert _snapshot(workdir) == before


def test_data_of_another_tokenizer_is_refused(gpt_run, tiny_config, tmp_path):
  """A tokenized_dir holding another tokenizer's tokens: a one-line error naming the fix."""
  workdir, _ = gpt_run
  other = str(tmp_path / "tokenized")
  _train(
    tiny_config(
      **{"data.tokenizer.kind": "char", "data.tokenized_dir": other, "train.total_steps": 1}
    ),
    tmp_path / "char_run",
  )
  before = _snapshot(workdir)
  with pytest.raises(ValueError, match="tokeniz") as info:
    _evaluate(workdir, overrides={"data.tokenized_dir": other})
  assert "\n" not in str(info.value)
  assert _snapshot(workdir) == before


def test_workdir_without_checkpoints(tmp_path):
  with pytest.raises(evaluate.CheckpointError, match="--workdir.*no config.json"):
    run_files.run_config(str(tmp_path))
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(checkpointer.CheckpointError, match="--workdir: no checkpoint"):
    evaluate.evaluate_run(None, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_trainer_says_when_it_resumes_and_when_it_is_done(tiny_config, tmp_path, capsys):
  _train(tiny_config(**{"train.stop_at_step": 3}), tmp_path)
  _train(tiny_config(), tmp_path)
  assert "resumed from step 3 of 6" in capsys.readouterr().out
  before = _snapshot(tmp_path)
  COMPILES.clear()
  assert _train(tiny_config(), tmp_path).step == 6
  assert "run finished: step 6 of 6" in capsys.readouterr().out
  assert not COMPILES
  assert _snapshot(tmp_path) == before  # nothing written


def _cli(module, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(0))
  return [sys.executable, "-m", module, *args], env


@pytest.mark.slow
def test_watch_beside_a_running_job(data_dir, tmp_path):
  """The CLI: --watch next to a training job evaluates every checkpoint exactly once (async
  saves in flight included) and exits 0 at the final step; a bad step exits 2 with one line."""
  workdir = str(tmp_path / "run")
  tiny = [
    "--config=configs/gpt.py:smoke",
    f"--config.data.data_dir={data_dir}",
    "--config.data.tokenizer.vocab_size=256",
    "--config.model.num_layers=2",
    "--config.model.d_model=32",
    "--config.model.num_heads=4",
    "--config.model.max_len=32",
    "--config.batch.seq_len=32",
    "--config.train.total_steps=40",
    "--config.checkpoint.every=5",
    "--config.checkpoint.keep=10",
    "--config.checkpoint.async_save=True",
    f"--workdir={workdir}",
  ]
  train = helpers.Running(*_cli("pretrain.train", *tiny))
  train.caught(lambda: os.path.exists(os.path.join(workdir, "config.json")), timeout=300)
  watch = helpers.Running(
    *_cli(
      "pretrain.evaluate",
      f"--workdir={workdir}",
      "--watch",
      "--max_batches=1",
      "--poll_seconds=0.2",
      "--timeout=240",
    )
  )
  out = watch.finish()  # (its stdout and stderr together)
  trained = train.finish()
  assert train.proc.returncode == 0, trained[-3000:]
  assert watch.proc.returncode == 0, out[-3000:]
  steps = [r["step"] for r in _rows(workdir)]
  assert steps == list(range(5, 45, 5)), steps  # each once, oldest first
  assert out.count("| eval |") == len(steps)
  bad = helpers.run_python(*_cli("pretrain.evaluate", f"--workdir={workdir}", "--step=7"))
  err = bad.stderr
  assert bad.returncode == 2 and err.strip().count("\n") == 0, err
  assert err.startswith("error: --step: no checkpoint at step 7") and "5, 10" in err, err
  usage = helpers.run_python(*_cli("pretrain.evaluate", "--help"))  # no workdir: usage, exit 0
  assert usage.returncode == 0 and "--watch" in usage.stdout, usage.stdout


def test_another_corpus_is_tokenized_the_runs_way(gpt_run, data_dir, tmp_path):
  workdir, _ = gpt_run
  corpus = tmp_path / "heldout.txt"
  corpus.write_text("A held-out text, never seen in training: ünïcödé and all.\n" * 200)
  tokenizers_before = sorted(os.listdir(os.path.join(data_dir, "tokenizers")))
  overrides = {
    "data.files": str(corpus),
    "data.split_by": "tail",
    "data.eval_split": "train+validation",
  }
  result = _evaluate(workdir, overrides=overrides, name="heldout")[6]
  assert sorted(os.listdir(os.path.join(data_dir, "tokenizers"))) == tokenizers_before
  row = [r for r in _rows(workdir) if r["name"] == "heldout"][-1]
  assert row["loss"] == result["loss"]
  # both splits of the corpus are read: about all of its tokens, in windows of 32
  import tokenizers

  tok = tokenizers.Tokenizer.from_file(os.path.join(workdir, "tokenizer.json"))
  assert abs(row["examples"] - len(tok.encode(corpus.read_text()).ids) / 32) <= 2
