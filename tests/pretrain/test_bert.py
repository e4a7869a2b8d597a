"""BERT / RoBERTa end to end on the one trainer: learning, sharding, resume, padding."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from configs import bert
from models import axes, encoder, model_config
from pretrain.objectives import registry
from pretrain.training import config_checks, data, trainer


def _records(workdir, key):
  with open(f"{workdir}/metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if key in r]


def _params(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state["params"]))


def test_configs_sizes_and_recipes():
  base = bert.get_config("base")
  cfg = model_config.resolve(base.model, 30522)
  assert encoder.count_params(cfg, exclude_positions=False) / 1e6 == pytest.approx(110.2, abs=0.1)
  assert base.objective == "mlm_nsp" and base.batch.seq_len == 128
  assert base.data.mlm.max_predictions == 20
  phase2 = bert.get_config("base,seq=512")
  assert phase2.batch.seq_len == 512 and phase2.data.mlm.max_predictions == 80
  roberta = bert.get_config("base,recipe=roberta")
  assert roberta.objective == "mlm" and not roberta.data.mlm.nsp and not roberta.model.nsp_head
  large = model_config.resolve(bert.get_config("large").model, 30522)
  assert encoder.count_params(large, exclude_positions=False) / 1e6 == pytest.approx(336.3, abs=0.1)
  with pytest.raises(ValueError, match="unknown recipe"):
    bert.get_config("base,recipe=electra")


@pytest.mark.slow
def test_mlm_accuracy_beats_most_frequent_token(tiny_bert, tmp_path):
  # Tiny widths leave the initial plateau sooner with a larger init than BERT's 0.02.
  config = tiny_bert(
    **{
      "train.total_steps": 200,
      "train.eval_every": 200,
      "train.log_every": 50,
      "train.eval_batches": 8,
      "batch.size": 16,
      "model.d_model": 64,
      "model.num_heads": 4,
      "model.init_std": 0.05,
      "optimizer.lr": 2e-3,
      "optimizer.warmup_steps": 20,
      "checkpoint.every": 100,
    }
  )
  result = trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  # The most-frequent-token baseline over the same evaluation masks.
  _, _, val, _ = data.load_data(config, registry.get(config.objective))
  batches = [val[""].eval_batch(i) for i in range(8)]
  ids = np.concatenate([b["masked_ids"][b["masked_weights"] > 0] for b in batches])
  baseline = np.bincount(ids).max() / len(ids)
  assert result.metrics["eval_mlm_accuracy"] > baseline + 0.15, (
    result.metrics["eval_mlm_accuracy"],
    baseline,
  )
  records = _records(tmp_path, "train/mlm_loss")
  assert records[-1]["train/mlm_loss"] < records[0]["train/mlm_loss"] - 1.0
  assert "train/nsp_accuracy" in records[-1]


@pytest.mark.slow
def test_sharded_equals_single_device(tiny_bert, tmp_path):
  """Parameters and batch sharded over data x fsdp x tensor train as on one device, to float32
  precision over three steps. The residual stream stays whole-width here: split over the tensor
  ways (the default), LayerNorm sums in another order and Adam's normalised steps amplify that
  in the near-cancelled gradients; its gradient is checked exact in test_grad_accum.py."""
  steps = {"train.total_steps": 3, "train.log_every": 1}
  one = trainer.train_and_evaluate(
    tiny_bert(**steps), str(tmp_path / "one"), devices=jax.devices()[:1]
  )
  config = tiny_bert(**steps, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  config.mesh.rules = tuple((n, None if n == axes.ACT_EMBED else m) for n, m in config.mesh.rules)
  eight = trainer.train_and_evaluate(config, str(tmp_path / "eight"))
  a = [r["train/loss"] for r in _records(tmp_path / "one", "train/loss")]
  b = [r["train/loss"] for r in _records(tmp_path / "eight", "train/loss")]
  np.testing.assert_allclose(a, b, rtol=1e-5)
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
    _params(one),
    _params(eight),
  )


@pytest.mark.slow
def test_roberta_resume_is_exact(tiny_bert, tmp_path):
  common = {"train.log_every": 1, "model.dropout": 0.1, "batch.grad_accum": 2, "batch.size": 16}
  straight = trainer.train_and_evaluate(
    tiny_bert(recipe="roberta", **common), str(tmp_path / "straight")
  )
  trainer.train_and_evaluate(
    tiny_bert(recipe="roberta", **common, **{"train.stop_at_step": 3}), str(tmp_path / "split")
  )
  resumed = trainer.train_and_evaluate(
    tiny_bert(recipe="roberta", **common), str(tmp_path / "split")
  )
  a = [r["train/loss"] for r in _records(tmp_path / "straight", "train/loss")]
  b = [r["train/loss"] for r in _records(tmp_path / "split", "train/loss")]
  assert a == b and len(a) == 6
  assert "train/nsp_loss" not in _records(tmp_path / "straight", "train/loss")[-1]
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(resumed))


@pytest.mark.slow
def test_all_padding_rows_contribute_nothing(tiny_bert):
  config = tiny_bert()
  cfg = model_config.resolve(config.model, 100)
  model = encoder.Encoder(cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  rng = np.random.default_rng(0)
  b, t, p = 4, 32, 5
  batch = {
    "inputs": rng.integers(5, 100, (b, t)).astype(np.int32),
    "type_ids": np.zeros((b, t), np.int32),
    "input_mask": np.ones((b, t), np.int32),
    "masked_positions": rng.integers(1, t, (b, p)).astype(np.int32),
    "masked_ids": rng.integers(5, 100, (b, p)).astype(np.int32),
    "masked_weights": np.ones((b, p), np.float32),
    "example_weights": np.ones(b, np.float32),
    "nsp_labels": rng.integers(0, 2, b).astype(np.int32),
  }
  padded = {k: np.concatenate([v, np.zeros_like(v[:2])]) for k, v in batch.items()}
  objective = registry.get("mlm_nsp")

  @jax.jit
  def loss_and_grads(batch):
    d = objective.denominators(batch)
    fn = lambda prm: objective.loss(nnx.merge(graphdef, prm), batch, None, d)[0]
    return jax.value_and_grad(fn)(params)

  (l1, g1), (l2, g2) = loss_and_grads(batch), loss_and_grads(padded)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8), g1, g2)


def test_max_predictions_too_small_is_refused(tiny_bert, tmp_path):
  config = tiny_bert(**{"data.mlm.max_predictions": 3})  # 15% of 32 needs 5
  with pytest.raises(config_checks.ConfigError, match="config.data.mlm.max_predictions: 3 .* 5"):
    trainer.train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow
def test_phase_two_starts_from_phase_one(tiny_bert, tmp_path):
  """BERT's recipe: phase 2 (longer sequences) starts from phase 1's parameters, at step 0."""
  model = {"model.max_len": 64, "data.mlm.max_predictions": 10}
  first = trainer.train_and_evaluate(
    tiny_bert(**model, **{"train.total_steps": 3}), str(tmp_path / "phase1")
  )
  # A near-zero lr leaves the loaded parameters where phase 1 left them.
  second = trainer.train_and_evaluate(
    tiny_bert(
      **model,
      **{
        "batch.seq_len": 64,
        "train.total_steps": 1,
        "optimizer.lr": 1e-12,
        "optimizer.min_lr": 0.0,
        "init_from": str(tmp_path / "phase1"),
      },
    ),
    str(tmp_path / "phase2"),
  )
  assert second.step == 1
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), _params(first), _params(second)
  )
