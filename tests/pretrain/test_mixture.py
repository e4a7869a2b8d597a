import pytest

"""Training on a mixture of datasets: per-dataset epochs and eval metrics, exact resume."""

import json
import os

import jax
import numpy as np

from configs import common, gpt
from pretrain import evaluate
from pretrain.state import run_files
from pretrain.training import trainer

CODE = ",".join(os.path.join(os.path.dirname(os.__file__), m, "*.py") for m in ("json", "http"))


def _mixture_config(tiny_config, **overrides):
  config = tiny_config(
    **{"train.log_every": 1, "train.eval_every": 3, "train.eval_batches": 2, **overrides}
  )
  config.data.mixture.docs = common.mixture_source(0.7)
  config.data.mixture.code = common.mixture_source(0.3, files=CODE, split_by="tail")
  return config


def _records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_mixture_reports_each_dataset_and_resumes_exactly(tiny_config, tmp_path):
  straight = trainer.train_and_evaluate(_mixture_config(tiny_config), str(tmp_path / "straight"))
  records = _records(tmp_path / "straight")
  train = [r for r in records if "train/loss" in r]
  evals = [r for r in records if "eval/loss" in r]
  assert len(train) == 6 and len(evals) == 2
  for key in ("eval/docs/loss", "eval/code/loss", "eval/docs/accuracy", "eval/code/perplexity"):
    assert key in evals[-1], sorted(evals[-1])
  # the overall loss is the token-weighted mean of the two (both evaluated on 2 x 8 x 32 tokens)
  final = evals[-1]
  assert abs(final["eval/loss"] - (final["eval/docs/loss"] + final["eval/code/loss"]) / 2) < 1e-5
  assert final["eval/docs/loss"] != final["eval/code/loss"]
  # per-dataset epochs: 0.7 / 0.3 of 8 rows a step, over each dataset's own window count
  assert train[-1]["train/epoch/docs"] > 0 and train[-1]["train/epoch/code"] > 0
  assert "train/epoch" in train[-1]
  # pretrain.evaluate on the same checkpoint and batches: the same numbers, a row per dataset
  workdir = str(tmp_path / "straight")
  evaluated = evaluate.evaluate_run(
    run_files.run_config(workdir), workdir, evaluate.Options(max_batches=2)
  )[6]
  for key in ("loss", "docs/loss", "code/loss", "code/accuracy"):
    np.testing.assert_allclose(evaluated[key], final[f"eval/{key}"], rtol=1e-6, err_msg=key)
  with open(os.path.join(workdir, "eval.jsonl")) as f:
    rows = {r["dataset"]: r for r in map(json.loads, f)}
  assert sorted(rows) == ["all", "code", "docs"]
  np.testing.assert_allclose(rows["docs"]["loss"], final["eval/docs/loss"], rtol=1e-6)
  # stop at 3, resume: the same losses and parameters, bitwise
  trainer.train_and_evaluate(
    _mixture_config(tiny_config, **{"train.stop_at_step": 3}), str(tmp_path / "split")
  )
  resumed = trainer.train_and_evaluate(_mixture_config(tiny_config), str(tmp_path / "split"))
  assert [r["train/loss"] for r in train] == [
    r["train/loss"] for r in _records(tmp_path / "split") if "train/loss" in r
  ]
  jax.tree.map(
    np.testing.assert_array_equal,
    jax.device_get(straight.state["params"]),
    jax.device_get(resumed.state["params"]),
  )


def test_example_mixture_config():
  config = gpt.get_config("smoke,mix=docs_code")
  assert config.data.mixture.docs.weight == 0.7 and config.data.mixture.code.weight == 0.3
  assert config.data.mixture.code.files.endswith(os.path.join("http", "*.py"))


@pytest.mark.slow
def test_resuming_with_new_weights_warns(tiny_config, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(_mixture_config(tiny_config, **{"train.total_steps": 2}), workdir)
  config = _mixture_config(tiny_config, **{"train.total_steps": 3})
  config.data.mixture.docs.weight = 0.5
  config.data.mixture.code.weight = 0.5
  capsys.readouterr()
  assert trainer.train_and_evaluate(config, workdir).step == 3
  err = capsys.readouterr().err
  assert "warning: resuming with other data than the checkpoint's" in err
  assert "'docs': 0.7" in err and "'docs': 0.5" in err
