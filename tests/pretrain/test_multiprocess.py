"""Real multi-process training: 2 processes x 4 CPU devices (jax.distributed on localhost, gloo
collectives, as launch/local.py starts them) against 1 process x 8 devices, same global batch.
The two processes tokenize the data in parallel, and a run they checkpoint can continue in a
single process (elastic): the batches are the same either way."""

import filecmp
import json
import os
import pathlib
import sys

import numpy as np
import pytest

from launch import local
from pretrain.ground import storage
from pretrain.training import trainer
from tests import helpers

OVERRIDES = helpers.TINY_GPT | {
  "data.prepare_pieces": 2,
  "train.total_steps": 4,
  "train.log_every": 1,
  "checkpoint.every": 2,
}


def _jsonl(path):
  return [json.loads(line) for line in storage.read_text(path).splitlines()]


def _losses(workdir):
  return [r["train/loss"] for r in _jsonl(f"{workdir}/metrics.jsonl") if "train/loss" in r]


def test_dry_run_prints_each_process(monkeypatch):
  # the device count is the launcher's; the environment's other XLA flags are kept
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_dump_to=d")
  envs = local.process_envs(2, 4321, devices_per_process=4)
  lines = local.render(envs, ["python", "-m", "pretrain.train", "--workdir=w"])
  assert lines == [
    f"JAX_COORDINATOR_ADDRESS=localhost:4321 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID={i} "
    "JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES=gloo "
    "XLA_FLAGS='--xla_force_host_platform_device_count=4 --xla_dump_to=d' "
    "python -m pretrain.train --workdir=w"
    for i in range(2)
  ]
  gpus = local.process_envs(2, 1, gpus_per_process=4)
  assert [e["CUDA_VISIBLE_DEVICES"] for e in gpus] == ["0,1,2,3", "4,5,6,7"]


def _two_processes(cmd):
  """`cmd` in 2 processes of 4 CPU devices each: their exit statuses and outputs."""
  return helpers.finish_all(helpers.processes(cmd, devices_per_process=4))


@pytest.mark.slow
@pytest.mark.parametrize(
  "mesh",
  [
    {},  # data parallel over all 8 devices of both processes
    # hybrid: data across the 2 processes (the slow links), fsdp over each one's 4 devices
    {"mesh.data": 2, "mesh.fsdp": 4, "mesh.dcn.data": 2},
  ],
)
def test_two_processes_equal_one(tiny_config, tmp_path, data_dir, mesh, request):
  # The hybrid run's workdir is in a GCS bucket (a local emulator): every process saves and
  # restores its shards there, and only process 0 writes the run's files.
  two = request.getfixturevalue("gcs")("two") if mesh else str(tmp_path / "two")
  single = trainer.train_and_evaluate(
    tiny_config(**OVERRIDES, **{"data.tokenized_dir": str(tmp_path / "tokenized_by_one")}),
    str(tmp_path / "one"),
  )
  tokenized_dir = tmp_path / "tokenized"  # the two processes tokenize it afresh, in parallel
  cmd = [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={two}",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.tokenized_dir={tokenized_dir}",
  ]
  cmd += helpers.flags(OVERRIDES | mesh)
  # Stop at step 2 (a checkpoint every process writes), then resume to the end: the
  # restore is collective too.
  if not mesh:  # the launcher itself, as the README runs it: its outputs prefixed, process 0's
    launcher = [sys.executable, "-m", "launch.local", "--num_processes=2"]
    first = helpers.run_python(
      launcher + ["--devices_per_process=4", "--"] + cmd + ["--config.train.stop_at_step=2"],
      dict(os.environ),
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[0] model smoke" in first.stdout and "[1] model smoke" not in first.stdout
  else:
    codes, outs = _two_processes(cmd + ["--config.train.stop_at_step=2"])
    assert codes == [0, 0], outs
  # The pieces both processes wrote equal those one process wrote.
  ours = tmp_path / "tokenized_by_one" / "train.documents"
  theirs = tokenized_dir / "train.documents"
  names = sorted(n for n in os.listdir(ours) if not n.startswith("."))
  assert names == sorted(n for n in os.listdir(theirs) if not n.startswith("."))
  assert len([n for n in names if n.endswith(".tokens.bin")]) == 2
  _, mismatch, errors = filecmp.cmpfiles(ours, theirs, names, shallow=False)
  assert not mismatch and not errors
  if not mesh:
    # Elastic: the 2-process run's checkpoint continues in one process of 8 devices.
    config = tiny_config(**OVERRIDES, **{"data.tokenized_dir": str(tokenized_dir)})
    resumed = trainer.train_and_evaluate(config, two)
    assert resumed.step == 4
  else:
    _resume_and_evaluate_in_two_processes(cmd, two)
  np.testing.assert_allclose(_losses(two), _losses(tmp_path / "one"), rtol=1e-5)
  assert single.step == 4
  # Both processes took part in the checkpoint; one complete step directory per save.
  saved = sorted(p.name for p in storage.path(f"{two}/checkpoints").iterdir() if p.name.isdigit())
  assert saved == ["2", "4"]
  if mesh:
    assert storage.exists(f"{two}/checkpoints/4/state/ocdbt.process_1")


def _resume_and_evaluate_in_two_processes(cmd, two):
  codes, (out0, out1) = _two_processes(cmd)
  assert codes == [0, 0], out0[-3000:] + out1[-3000:]
  # Logs come from process 0 only.
  assert "model smoke" in out0 and "model smoke" not in out1
  assert "step 3/4" in out0 and "step 1/4" not in out0  # resumed
  # pretrain.evaluate in the same 2 processes: process 0 writes the row, equal to the
  # trainer's final evaluation of the same batches.
  codes, (out0, out1) = _two_processes(
    [sys.executable, "-m", "pretrain.evaluate", f"--workdir={two}", "--max_batches=1"]
  )
  assert codes == [0, 0], out0[-3000:] + out1[-3000:]
  assert "step 4/4 | eval |" in out0 and "step 4/4" not in out1
  rows = _jsonl(f"{two}/eval.jsonl")
  trained = [r for r in _jsonl(f"{two}/metrics.jsonl") if "eval/loss" in r][-1]
  assert len(rows) == 1 and rows[0]["step"] == 4 == trained["step"]
  np.testing.assert_allclose(rows[0]["loss"], trained["eval/loss"], rtol=1e-6)


@pytest.mark.slow
def test_two_processes_build_bert_pairs_in_parallel_and_equal_one(
  tiny_bert, tmp_path, data_dir, sentence_corpus
):
  """BERT's tokenized pieces and NSP pairs are shared out over 2 processes; the run equals one
  process building everything."""
  blocks = pathlib.Path(sentence_corpus).read_text().split("\n\n")
  for k, half in enumerate((blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :])):
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / f"{k}.txt").write_text("\n\n".join(half))  # a piece is whole shards
  overrides = {
    "data.files": f"{tmp_path}/corpus/*.txt",
    "data.prepare_pieces": 2,
    "train.total_steps": 3,
    "train.log_every": 1,
    "train.eval_batches": 1,
    "checkpoint.every": 0,
  }
  tokenized_dir = tmp_path / "tokenized"
  single = trainer.train_and_evaluate(
    tiny_bert(**overrides, **{"data.tokenized_dir": str(tmp_path / "by_one")}),
    str(tmp_path / "one"),
  )
  cmd = [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/bert.py:smoke",
    f"--workdir={tmp_path / 'two'}",
    f"--config.data.tokenized_dir={tokenized_dir}",
    f"--config.data.data_dir={data_dir}",
    "--config.data.doc_split=blank_line",
    "--config.data.tokenizer.vocab_size=128",
    "--config.model.num_layers=2",
    "--config.model.num_heads=2",
    "--config.model.d_model=32",
    "--config.model.max_len=32",
    "--config.model.dropout=0.0",
    "--config.batch.size=8",
    "--config.batch.seq_len=32",
    "--config.data.mlm.max_predictions=5",
    "--config.train.eval_every=0",
    "--config.train.peak_flops=1e12",
    "--config.checkpoint.async_save=False",
  ]
  cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
  codes, outs = _two_processes(cmd)
  assert codes == [0, 0], outs
  np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
  assert single.step == 3
  # Each process built one of the two example pieces; they equal the single process's.
  ours = sorted((tmp_path / "by_one" / "train.sentences").glob("examples-*"))
  theirs = sorted(tokenized_dir.glob("train.sentences/examples-*"))
  assert len(ours) == len(theirs) == 1 and ours[0].name == theirs[0].name
  names = sorted(p.name for p in ours[0].iterdir())
  assert names == sorted(p.name for p in theirs[0].iterdir()) and "piece-00001.json" in names
  _, mismatch, errors = filecmp.cmpfiles(ours[0], theirs[0], names, shallow=False)
  assert not mismatch and not errors
