"""Weights & Biases logging (pretrain/training/metrics.py Writer, config.wandb), offline into tmp_path."""

import glob
import json
import os
import struct
import sys
import time

import pytest

from configs import gpt
from pretrain.ground import errors
from pretrain.training import metrics

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2

BLOCK = 32768  # the .wandb transaction log is a LevelDB-style log of 32 KiB blocks


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
  """W&B offline and silent, with its settings, cache and data directories in tmp_path."""
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  for var in (
    "WANDB_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_DATA_DIR",
    "WANDB_ARTIFACT_DIR",
  ):
    monkeypatch.setenv(var, str(tmp_path / "home" / var.lower()))
  for var in ("WANDB_RUN_ID", "WANDB_RUN_GROUP", "WANDB_RESUME", "WANDB_PROJECT", "WANDB_ENTITY"):
    monkeypatch.delenv(var, raising=False)


def _config(**wandb_fields):
  config = gpt.get_config("smoke")
  config.wandb.update(dict(enabled=True, **wandb_fields))
  return config


def _records(path):
  """The protobuf records of a .wandb file: a ':W&B' header, then blocks of records each with
  a 7-byte header (checksum, length, type: 1 full, 2 first, 3 middle, 4 last)."""
  data = open(path, "rb").read()
  if len(data) < 7:  # the header not written yet
    return
  assert data[:4] == b":W&B", data[:7]
  pos, chunks = 7, b""
  while pos + 7 <= len(data):
    if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
      pos += BLOCK - pos % BLOCK
      continue
    _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
    if pos + 7 + length > len(data):  # a record still being written
      return
    chunks += data[pos + 7 : pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(chunks)
      chunks = b""
      yield record


def _complete_records(path, timeout=60):
  """The records of a finished run's log. W&B's service may still be writing the file when
  wandb.finish() returns, so wait (a bounded time) for the run's closing 'exit' record."""
  deadline = time.monotonic() + timeout
  while True:
    records = list(_records(path))
    if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
      return records
    time.sleep(0.2)


def _logged(run_dir):
  """(history rows as {key: value} without W&B's own '_' keys, the run's config, its id)."""
  (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
  rows, config, run_id = [], {}, None
  for record in _complete_records(path):
    if record.HasField("history"):
      row = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for item in record.history.item
      }
      rows.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    elif record.HasField("run"):
      run_id = record.run.run_id
      config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
  return rows, config, run_id


def _run_dirs(tmp_path):
  return sorted(glob.glob(str(tmp_path / "wandb" / "offline-run-*")))


def test_writer_logs_scalars_to_an_offline_run(tmp_path):
  config = _config(name="tiny")
  writer = metrics.Writer(tmp_path, wandb_config=config.wandb, run_config=config)
  for step in (10, 20, 30):
    writer.write(step, {"loss": 1.0 / step, "lr": 0.5}, prefix="train/")
  writer.write(30, {"loss": 2.5, "nan": float("nan")}, prefix="eval/")
  writer.close()

  (run_dir,) = _run_dirs(tmp_path)
  rows, logged_config, run_id = _logged(run_dir)
  assert run_id == (tmp_path / "wandb_id.txt").read_text().strip()
  assert run_dir.endswith("-" + run_id)
  assert rows == [
    {"train/loss": 0.1, "train/lr": 0.5, "_step": 10},
    {"train/loss": 0.05, "train/lr": 0.5, "_step": 20},
    {"train/loss": 1 / 30, "train/lr": 0.5, "eval/loss": 2.5, "_step": 30},  # NaN left out
  ]
  assert logged_config["batch"]["seq_len"] == config.batch.seq_len
  assert logged_config["wandb"]["name"] == "tiny"
  # metrics.jsonl is written as before
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 4 and json.loads(lines[0]) == {
    "step": 10,
    "train/loss": 0.1,
    "train/lr": 0.5,
  }


def test_reopened_writer_continues_the_same_run(tmp_path):
  config = _config()
  for step in (1, 2):
    writer = metrics.Writer(tmp_path, wandb_config=config.wandb, run_config=config)
    writer.write(step, {"loss": float(step)})
    writer.close()
  run_dirs = _run_dirs(tmp_path)
  run_ids = {_logged(d)[2] for d in run_dirs}
  assert len(run_dirs) == 2 and run_ids == {(tmp_path / "wandb_id.txt").read_text().strip()}


def test_disabled_by_default(tmp_path):
  config = gpt.get_config("smoke")
  assert not config.wandb.enabled
  writer = metrics.Writer(tmp_path, wandb_config=config.wandb, run_config=config)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_id.txt").exists()
  # nor on processes other than 0
  metrics.Writer(tmp_path, enabled=False, wandb_config=_config().wandb).close()
  assert not (tmp_path / "wandb").exists()


def test_missing_wandb_is_a_user_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)
  config = _config()
  with pytest.raises(errors.UserError, match="config.wandb.enabled") as e:
    metrics.Writer(tmp_path, wandb_config=config.wandb, run_config=config)
  assert "pip install wandb" in str(e.value) and "\n" not in str(e.value)
