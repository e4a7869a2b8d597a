"""End-to-end training: learning, sharded == single device, exact resume, preemption."""

import shutil

import jax
import numpy as np
import pytest

from pretrain.training import trainer
from tests.helpers import tiny_gpt_config


def _params(result):
  return jax.tree.map(np.asarray, jax.device_get(result.state["params"]))


def _losses(workdir):
  import json

  with open(f"{workdir}/metrics.jsonl") as f:
    return [r for r in map(json.loads, f) if "train/loss" in r]


@pytest.mark.slow
def test_loss_falls(tiny_config, tmp_path):
  config = tiny_config(
    **{
      "train.total_steps": 120,
      "train.log_every": 20,
      "train.eval_every": 120,
      "train.eval_batches": 4,
      "optimizer.lr": 3e-3,
      "optimizer.warmup_steps": 10,
      "checkpoint.every": 60,
    }
  )
  result = trainer.train_and_evaluate(config, str(tmp_path))
  losses = [r["train/loss"] for r in _losses(tmp_path)]
  assert losses[-1] < losses[0] - 1.0, losses
  # A uniform guess over the 256-token vocab would be ln(256) = 5.55.
  assert result.metrics["eval_loss"] < 4.5, result.metrics["eval_loss"]
  assert (tmp_path / "config.json").exists()
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sharded_equals_single_device(tiny_config, tmp_path):
  steps = dict(**{"train.total_steps": 3, "train.log_every": 1})
  one = trainer.train_and_evaluate(
    tiny_config(**steps), str(tmp_path / "one"), devices=jax.devices()[:1]
  )
  sharded_cfg = tiny_config(**steps, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  eight = trainer.train_and_evaluate(sharded_cfg, str(tmp_path / "eight"))
  assert len(jax.devices()) == 8
  kernel = eight.state["params"]["blocks"]["mlp"]["fc"]["kernel"]
  assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
  np.testing.assert_allclose(
    [r["train/loss"] for r in _losses(tmp_path / "one")],
    [r["train/loss"] for r in _losses(tmp_path / "eight")],
    rtol=1e-5,
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
    _params(one),
    _params(eight),
  )


@pytest.mark.slow
def test_resume_is_exact(tiny_config, tmp_path):
  # Dropout and grad accumulation on, so the RNG and the data position both matter.
  common = {"train.log_every": 1, "model.dropout": 0.1, "batch.grad_accum": 2, "batch.size": 16}
  straight = trainer.train_and_evaluate(tiny_config(**common), str(tmp_path / "straight"))
  first = trainer.train_and_evaluate(
    tiny_config(**common, **{"train.stop_at_step": 3}), str(tmp_path / "split")
  )
  assert first.step == 3
  second = trainer.train_and_evaluate(tiny_config(**common), str(tmp_path / "split"))
  assert second.step == 6
  a = [r["train/loss"] for r in _losses(tmp_path / "straight")]
  b = [r["train/loss"] for r in _losses(tmp_path / "split")]
  assert a == b, (a, b)
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(second))


@pytest.mark.slow
def test_resume_is_exact_with_async_saves(tiny_config, tmp_path):
  """The default, asynchronous checkpointing: a run stopped and resumed equals one that never
  stopped, bitwise."""
  common = {
    "train.log_every": 1,
    "model.dropout": 0.1,
    "checkpoint.async_save": True,
    "checkpoint.every": 2,
  }
  straight = trainer.train_and_evaluate(tiny_config(**common), str(tmp_path / "straight"))
  trainer.train_and_evaluate(
    tiny_config(**common, **{"train.stop_at_step": 3}), str(tmp_path / "split")
  )
  second = trainer.train_and_evaluate(tiny_config(**common), str(tmp_path / "split"))
  assert [r["train/loss"] for r in _losses(tmp_path / "straight")] == [
    r["train/loss"] for r in _losses(tmp_path / "split")
  ]
  jax.tree.map(np.testing.assert_array_equal, _params(straight), _params(second))


def test_a_replicated_state_saves_on_cpu_without_compiling(tmp_path):
  """In one CPU process, orbax saves a replicated array from one replica, not sliced per replica
  (a compiled program per device and shape at a process's first save)."""
  from jax.sharding import NamedSharding, PartitionSpec

  from pretrain.state import checkpointer, checksums
  from tests.helpers import COMPILES

  mesh = jax.make_mesh((8,), ("data",))
  state = {
    "w": jax.device_put(
      np.arange(8 * 24, dtype=np.float32).reshape(8, 24) + 0.5, NamedSharding(mesh, PartitionSpec())
    )
  }
  ckpt = checkpointer.Checkpointer(str(tmp_path))
  checksums.of(state)  # (the save's own checksums, compiled here)
  COMPILES.clear()
  ckpt.save(1, state, {"step": 1}, force=True)
  ckpt.wait()
  assert not COMPILES
  ckpt.close()
  saved = checkpointer.Checkpointer(str(tmp_path), read_only=True)
  np.testing.assert_array_equal(saved.read_as_saved(1)["w"], state["w"])
  saved.close()


@pytest.mark.slow
def test_steps_queued_on_eight_cpu_devices_do_not_deadlock(tiny_config, tmp_path):
  """Nothing read back for 120 steps (no logging, evaluation or checkpoint before the end): on
  CPU, XLA's all-reduces between devices deadlock once a few dozen steps are in flight, so each
  step finishes before the next is dispatched (pretrain/training/steps.py)."""
  config = tiny_config(**{"train.total_steps": 120, "train.log_every": 120, "checkpoint.every": 0})
  assert trainer.train_and_evaluate(config, str(tmp_path)).step == 120


def test_checkpoint_keep_keeps_that_many(tiny_config, tmp_path):
  trainer.train_and_evaluate(
    tiny_config(**{"checkpoint.every": 1, "checkpoint.keep": 2}), str(tmp_path)
  )
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [
    5,
    6,
  ]


@pytest.mark.slow
def test_init_from_loads_parameters_only(tiny_config, tmp_path):
  first = trainer.train_and_evaluate(tiny_config(**{"train.total_steps": 3}), str(tmp_path / "a"))
  # A near-zero lr leaves the loaded parameters where they were after one step.
  config = tiny_config(
    **{
      "train.total_steps": 1,
      "init_from": str(tmp_path / "a"),
      "optimizer.lr": 1e-12,
      "optimizer.min_lr": 0.0,
    }
  )
  second = trainer.train_and_evaluate(config, str(tmp_path / "b"))
  assert second.step == 1  # started from step 0, not from the source's step 3
  # a fresh optimizer: Adam's count is 1 (the source's is 3), its moments those of one step
  adam = lambda result: result.state["opt_state"][1][0]  # clip, then scale_by_adam's state
  assert int(adam(first).count) == 3 and int(adam(second).count) == 1
  for mu, nu in zip(jax.tree.leaves(adam(second).mu), jax.tree.leaves(adam(second).nu)):
    # one step from zero: mu = (1 - b1) g, nu = (1 - b2) g^2, so nu = 0.05 / 0.1^2 mu^2
    np.testing.assert_allclose(nu, 0.05 / 0.01 * np.square(mu), rtol=1e-4, atol=1e-12)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), _params(first), _params(second)
  )
  fresh = trainer.train_and_evaluate(tiny_config(**{"train.total_steps": 1}), str(tmp_path / "c"))
  assert second.metrics["loss"] < fresh.metrics["loss"]


RESTORE_RUN = {"train.log_every": 1, "batch.size": 8, "mesh.data": 8}


@pytest.fixture(scope="module")
def data_parallel_runs(data_dir, tmp_path_factory):
  """A 6-step run on 8 devices (losses, params), and the same run stopped at step 3 (its
  workdir): the moves below continue copies of it."""
  root = tmp_path_factory.mktemp("restore")
  straight = trainer.train_and_evaluate(
    tiny_gpt_config(data_dir, **RESTORE_RUN), str(root / "straight")
  )
  trainer.train_and_evaluate(
    tiny_gpt_config(data_dir, **RESTORE_RUN, **{"train.stop_at_step": 3}), str(root / "stopped")
  )
  return [r["train/loss"] for r in _losses(root / "straight")], _params(straight), root / "stopped"


@pytest.mark.slow
@pytest.mark.xdist_group("data_parallel_runs")
@pytest.mark.parametrize("mesh,devices", [(dict(data=1, fsdp=4, tensor=2), 8), (dict(data=1), 1)])
def test_restore_onto_another_mesh(data_parallel_runs, tiny_config, tmp_path, mesh, devices):
  losses, params, stopped = data_parallel_runs
  shutil.copytree(stopped, tmp_path / "moved")
  overrides = {**RESTORE_RUN, **{f"mesh.{k}": v for k, v in mesh.items()}}
  moved = trainer.train_and_evaluate(
    tiny_config(**overrides), str(tmp_path / "moved"), devices=jax.devices()[:devices]
  )
  kernel = moved.state["params"]["blocks"]["mlp"]["fc"]["kernel"]
  assert len(kernel.sharding.device_set) == devices
  np.testing.assert_allclose(
    losses, [r["train/loss"] for r in _losses(tmp_path / "moved")], rtol=1e-5
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, _params(moved)
  )


STRATEGIES = {
  "dp": dict(data=8),
  "fsdp": dict(data=1, fsdp=8),
  "tp": dict(data=4, tensor=2),
  "sequence": dict(data=4, sequence=2),
  "dp_fsdp_sequence_tp": dict(data=1, fsdp=2, sequence=2, tensor=2),
}


STRATEGY_RUN = {"train.total_steps": 2, "train.log_every": 1, "model.position": "rope"}


@pytest.fixture(scope="module")
def one_device_run(data_dir, tmp_path_factory):
  """(losses, params) of the strategies' run on one device."""
  workdir = tmp_path_factory.mktemp("one_device")
  one = trainer.train_and_evaluate(
    tiny_gpt_config(data_dir, **STRATEGY_RUN), str(workdir), devices=jax.devices()[:1]
  )
  return [r["train/loss"] for r in _losses(workdir)], _params(one)


@pytest.mark.slow
@pytest.mark.xdist_group("one_device_run")
@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_equals_one_device(one_device_run, tiny_config, tmp_path, name):
  losses, params = one_device_run
  mesh = {f"mesh.{k}": v for k, v in STRATEGIES[name].items()}
  many = trainer.train_and_evaluate(tiny_config(**STRATEGY_RUN, **mesh), str(tmp_path))
  np.testing.assert_allclose(losses, [r["train/loss"] for r in _losses(tmp_path)], rtol=1e-5)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, _params(many)
  )


@pytest.mark.slow
def test_bfloat16_first_moment_and_remat_offload_as_dots_on_cpu(tiny_config, tmp_path, capsys):
  config = tiny_config(
    **{
      "optimizer.mu_dtype": "bfloat16",
      "model.remat": "offload",
      "train.total_steps": 20,
      "train.log_every": 10,
      "optimizer.lr": 3e-3,
      "checkpoint.every": 10,
    }
  )
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert "model.remat: 'offload' runs as 'dots' on cpu" in capsys.readouterr().out
  mu = result.state["opt_state"][1][0].mu  # clip, then adamw's scale_by_adam state
  assert {x.dtype for x in jax.tree.leaves(mu)} == {jax.numpy.dtype("bfloat16")}
  assert {x.dtype for x in jax.tree.leaves(result.state["params"])} == {np.dtype("float32")}
  losses = [r["train/loss"] for r in _losses(tmp_path)]
  assert losses[-1] < losses[0]
