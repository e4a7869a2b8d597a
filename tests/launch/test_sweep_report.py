"""The sweep report over fake trial workdirs: real metrics.jsonl files and TensorBoard scalars."""

import csv
import glob
import json
import os
import shlex

import pytest

from launch import sweep_report

# trial: (state, overrides, eval losses by step, train losses by step)
TRIALS = {
  0: (
    "COMPLETE",
    {"optimizer.lr": 0.003, "model.activation": "gelu"},
    {100: 4.0, 200: 3.5, 300: 3.2},
    {50: 5.0, 150: 4.2},
  ),
  1: ("PRUNED", {"optimizer.lr": 1e-05, "model.activation": "relu"}, {100: 5.0}, {50: 6.0}),
  2: ("FAIL", {"optimizer.lr": 0.1, "model.activation": "gelu"}, {}, {50: 9.0}),
  3: (
    "COMPLETE",
    {"optimizer.lr": 0.001, "model.activation": "relu"},
    {100: 4.1, 200: 3.0},
    {50: 5.1},
  ),
}


def _write_trial(workdir, evals, trains):
  """metrics.jsonl as the trainer writes it (trial 0 resumed: step 200 logged twice, the last
  row counting) and the same scalars through a tensorboardX SummaryWriter."""
  from tensorboardX import SummaryWriter

  os.makedirs(workdir)
  rows = [{"step": s, "train/loss": v, "train/lr": 0.01} for s, v in trains.items()]
  rows += [{"step": s, "eval/loss": v, "eval/accuracy": 1 / v} for s, v in evals.items()]
  if 300 in evals:  # logged step 200, stopped, resumed from step 100 and logged it again
    rows[len(trains) + 1 : len(trains) + 1] = [
      {"step": 200, "eval/loss": 99.0, "eval/accuracy": 0.0},
      {"step": 100, "eval/loss": 4.0, "eval/accuracy": 0.25},
    ]
  with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  with SummaryWriter(os.path.join(workdir, "tensorboard")) as w:
    for row in rows:
      for k, v in row.items():
        if k != "step":
          w.add_scalar(k, v, row["step"])


@pytest.fixture(name="records")
def fixture_records(tmp_path):
  records = []
  for n, (state, overrides, evals, trains) in TRIALS.items():
    workdir = str(tmp_path / "trials" / str(n))
    _write_trial(workdir, evals, trains)
    values = list(evals.values())
    records.append(
      {
        "trial": n,
        "state": state,
        "overrides": overrides,
        "steps": max(evals) if evals else None,
        "final": values[-1] if values else None,
        "best": min(values) if values else None,
        "wall_s": 10.0 + n,
        "workdir": workdir,
        "command": [
          "python",
          "-m",
          "pretrain.train",
          "--config=configs/gpt.py:tiny",
          f"--config.optimizer.lr={overrides['optimizer.lr']}",
          f"--workdir={workdir}",
        ],
      }
    )
  return records


def test_table_ranks_by_objective(records):
  rows = sweep_report.table(records, "loss", "min")
  assert [r["trial"] for r in rows] == [3, 0, 1, 2]
  assert [r["rank"] for r in rows] == [1, 2, 3, ""]
  assert list(rows[0]) == [
    "rank",
    "trial",
    "state",
    "optimizer.lr",
    "model.activation",
    "steps",
    "final",
    "best",
    "wall_s",
  ]
  assert rows[0]["optimizer.lr"] == 0.001 and rows[3]["best"] == ""
  rows = sweep_report.table(records, "loss", "max")
  assert [r["trial"] for r in rows] == [1, 0, 3, 2]


def test_csv_and_markdown(records, tmp_path):
  rows = sweep_report.table(records, "loss", "min")
  path = tmp_path / "results.csv"
  sweep_report.write_csv(rows, path)
  with open(path, newline="", encoding="utf-8") as f:
    read = list(csv.DictReader(f))
  assert [r["trial"] for r in read] == ["3", "0", "1", "2"]
  assert read[0]["optimizer.lr"] == "0.001" and read[1]["best"] == "3.2"
  text = sweep_report.markdown(rows, "loss", "min")
  assert text.splitlines()[0] == "objective: eval loss (min)"
  assert "| 3 | 1 | PRUNED | 1e-05 | relu | 100 | 5 | 5 | 11 |" in text
  assert "| 2 | 0 | COMPLETE | 0.003 | gelu |" in text


def test_best_command(records):
  assert sweep_report.best_command(records, "loss", "min") == records[3]["command"]
  # the pruned trial 1 has the highest loss, but a complete trial is preferred
  assert sweep_report.best_command(records, "loss", "max") == records[0]["command"]
  assert sweep_report.best_command(records[1:3], "loss", "max") == records[1]["command"]
  assert sweep_report.best_command(records[2:3], "loss", "min") is None


def test_eval_curve_keeps_last_row_of_a_step(records):
  assert sweep_report.eval_curve(records[0]["workdir"], "loss") == (
    [100, 200, 300],
    [4.0, 3.5, 3.2],
  )


def test_plot(records, tmp_path):
  from matplotlib import image

  path = tmp_path / "sweep.png"
  fig = sweep_report.plot(records, "loss", "min", path)
  lines = fig.axes[0].get_lines()
  assert len(lines) == 3  # trial 2 logged train/loss only
  assert [line.get_label().split(":")[0] for line in lines] == ["trial 0", "trial 1", "trial 3"]
  assert fig.axes[0].get_ylabel() == "eval loss"
  assert [ax.get_title() for ax in fig.axes[1:]] == ["optimizer.lr", "model.activation"]
  assert fig.axes[1].get_xscale() == "log"  # 1e-05 .. 0.003
  pixels = image.imread(path)
  width, height = fig.get_size_inches() * fig.dpi
  assert pixels.shape == (round(height), round(width), 4)


def _hparams_files(directory):
  return sorted(glob.glob(os.path.join(directory, "*" + sweep_report.HPARAMS_SUFFIX)))


def _summaries(directory):
  """{tag: [(step, summary value)]} over every event file of one TensorBoard run (directory),
  read with TensorBoard's own record reader, protos and data migration. (Its
  EventAccumulator would do too, but it imports TensorFlow when installed: seconds.)"""

  from tensorboard import data_compat
  from tensorboard.compat.proto import event_pb2
  from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow

  tags = {}
  for path in sorted(glob.glob(os.path.join(directory, "*tfevents*"))):
    reader = pywrap_tensorflow.PyRecordReader_New(path)
    while True:
      try:
        reader.GetNext()
      except errors.OutOfRangeError:
        break
      event = event_pb2.Event.FromString(reader.record())
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((event.step, data_compat.migrate_value(value)))
  return tags


def test_write_hparams_is_a_tensorboard_session(records):
  pytest.importorskip("tensorboard")
  from tensorboard.plugins.hparams import api_pb2, metadata
  from tensorboard.util import tensor_util

  directory = os.path.join(records[0]["workdir"], "tensorboard")
  assert sweep_report.write_hparams(records[0], "loss", directory)
  assert len(_hparams_files(directory)) == 1
  assert not sweep_report.write_hparams(records[0], "loss", directory)
  assert len(_hparams_files(directory)) == 1

  tags = _summaries(directory)
  # one run: the trial's own scalars next to its session and its objective
  assert {"eval/loss", "train/loss", "sweep/loss"} <= set(tags)
  [(step, objective)] = tags["sweep/loss"]
  assert step == 300 and float(tensor_util.make_ndarray(objective.tensor)) == pytest.approx(3.2)
  [(_, start)] = tags[metadata.SESSION_START_INFO_TAG]
  assert start.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
  start = metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
  assert start.hparams["optimizer.lr"].number_value == pytest.approx(0.003)
  assert start.hparams["model.activation"].string_value == "gelu"
  assert start.hparams["trial"].number_value == 0
  assert start.hparams["state"].string_value == "COMPLETE"
  [(_, end)] = tags[metadata.SESSION_END_INFO_TAG]
  end = metadata.parse_session_end_info_plugin_data(end.metadata.plugin_data.content)
  assert end.status == api_pb2.STATUS_SUCCESS

  failed = os.path.join(records[2]["workdir"], "tensorboard")
  assert sweep_report.write_hparams(records[2], "loss", failed)
  tags = _summaries(failed)
  assert "sweep/loss" not in tags  # no value to show
  [(_, end)] = tags[metadata.SESSION_END_INFO_TAG]
  end = metadata.parse_session_end_info_plugin_data(end.metadata.plugin_data.content)
  assert end.status == api_pb2.STATUS_FAILURE


def test_write_report(records, tmp_path):
  text = sweep_report.write_report(records, "loss", "min", str(tmp_path))
  assert "objective: eval loss (min)" in text
  assert "best trial 3: loss 3\n" in text
  assert shlex.join(records[3]["command"]) in text
  assert f"tensorboard --logdir {tmp_path / 'trials'}" in text
  for name in ("results.csv", "results.md", "sweep.png"):
    assert (tmp_path / name).exists()
  for r in records:  # every finished trial, the failed one too
    assert len(_hparams_files(os.path.join(r["workdir"], "tensorboard"))) == 1
  sweep_report.write_report(records, "loss", "min", str(tmp_path))
  for r in records:
    assert len(_hparams_files(os.path.join(r["workdir"], "tensorboard"))) == 1


def test_a_best_value_at_the_edge_of_those_tried_is_said(records, tmp_path):
  assert sweep_report.edge_notes(records, "min") == []  # lr 1e-3: inside 1e-5 .. 0.1
  records[3]["overrides"]["optimizer.lr"] = 1e-6  # now the smallest value tried
  assert sweep_report.edge_notes(records, "min") == [
    "note: the best optimizer.lr=1e-06 is the smallest value tried; the optimum may lie "
    "below it: extend the grid or range below 1e-06"
  ]
  text = sweep_report.write_report(records, "loss", "min", str(tmp_path))
  assert "note: the best optimizer.lr=1e-06 is the smallest value tried" in text
  assert sweep_report.edge_notes(records[:2], "min") == []  # two values: no edge to speak of
