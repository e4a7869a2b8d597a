"""The report of a hyperparameter sweep: what each trial gave, ranked, plotted and side by side.

A sweep runs each trial as `python -m pretrain.train ... --workdir=<sweepdir>/trials/<n>`; the
runner describes every trial by a record (a dict):

  trial      int, the trial number
  state      "COMPLETE", "PRUNED", "FAIL", "RUNNING" or "WAITING"
  overrides  {field: value} of the swept fields, e.g. {"optimizer.lr": 0.003}
  steps      the last evaluated step, or None
  final      the objective at the last evaluation, or None
  best       the best objective over the trial's evaluations, or None
  wall_s     seconds the trial ran, or None
  workdir    the trial's workdir (holding metrics.jsonl and tensorboard/)
  command    the trial's argv (a list of str)

write_report(records, metric, mode, sweepdir) writes into the sweep directory:

  results.csv  one row per trial: rank, trial, state, one column per swept field, steps,
               final, best, wall_s; ranked by best (ascending for mode "min", descending for
               "max"), trials without a value last, by number
  results.md   the same as a GitHub markdown table, under a line naming the objective
  sweep.png    left: eval/<metric> against step, one curve per trial that evaluated; right: one
               scatter per swept field, the best objective against the field's value (pruned
               trials drawn with another marker, failed ones left out)

and, in each finished trial's own tensorboard/ directory, a TensorBoard HParams session (its
overrides, number and state, and the scalar sweep/<metric> = best), so that
`tensorboard --logdir <sweepdir>/trials` shows the trials side by side with their own scalars
(eval/loss, ...) as the session's metrics. It returns the text to print: the table, the best
trial with its full command line, and where the files are.

matplotlib is imported only to plot, onto its Agg canvas (no display).
"""

import csv
import json
import math
import numbers
import os
import shlex

from pretrain.ground import storage
from pretrain.training import metrics

MODES = ("min", "max")
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
HPARAMS_SUFFIX = ".hparams"  # the event file holding a trial's HParams session; marks it written
COLUMNS_AFTER = ("steps", "final", "best", "wall_s")


def _check_mode(mode):
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _value(x):
  """x as a float if it is a finite number, else None."""
  if x is None or isinstance(x, bool):
    return None
  try:
    x = float(x)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def _metric_name(metric):
  """The metric without its "eval/" prefix: "loss" for "loss" and for "eval/loss"."""
  return metric[len("eval/") :] if metric.startswith("eval/") else metric


def _objective(metric, mode):
  return f"eval {_metric_name(metric)} ({mode})"


def fields(records):
  """The swept fields: the union of the records' overrides keys, in first-seen order."""
  seen = {}
  for r in records:
    for k in r.get("overrides") or {}:
      seen.setdefault(k, None)
  return list(seen)


def ranked(records, mode):
  """The records sorted by objective: those with a best value first (ascending for "min",
  descending for "max", ties by trial number), then the rest by trial number."""
  _check_mode(mode)
  sign = 1 if mode == "min" else -1
  scored = [r for r in records if _value(r.get("best")) is not None]
  rest = [r for r in records if _value(r.get("best")) is None]
  scored.sort(key=lambda r: (sign * _value(r["best"]), r["trial"]))
  rest.sort(key=lambda r: r["trial"])
  return scored + rest


def table(records, metric, mode):
  """One row dict per trial, ranked (see `ranked`): rank (1.. for trials with a value, ""
  otherwise), trial, state, one column per swept field ("" where not set), steps, final, best,
  wall_s. `metric` only names the objective (the rows are the same for any)."""
  del metric
  names = fields(records)
  rows = []
  for i, r in enumerate(ranked(records, mode)):
    has_value = _value(r.get("best")) is not None
    row = {"rank": i + 1 if has_value else "", "trial": r["trial"], "state": r["state"]}
    overrides = r.get("overrides") or {}
    row.update({k: overrides.get(k, "") for k in names})
    row.update({k: "" if r.get(k) is None else r[k] for k in COLUMNS_AFTER})
    rows.append(row)
  return rows


def write_csv(rows, path):
  """Writes the table's rows as CSV (a header line, then one line per trial)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    if not rows:
      return
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)


def _short(v):
  """A swept value, short and repr-like: 0.003, 1e-05, 128, adamw, True."""
  if isinstance(v, float):
    return format(v, "g")
  return str(v)


def _cell(key, v):
  """A markdown cell: results with 4 significant digits, swept values short."""
  if v is None or v == "":
    text = ""
  elif key in ("final", "best", "wall_s") and isinstance(v, float):
    text = format(v, ".4g")
  else:
    text = _short(v)
  return text.replace("|", "\\|")


def markdown(rows, metric, mode):
  """The rows as a GitHub markdown table, under a line naming the objective."""
  lines = [f"objective: {_objective(metric, mode)}", ""]
  if not rows:
    return "\n".join(lines + ["(no trials)"]) + "\n"
  keys = list(rows[0])
  lines.append("| " + " | ".join(keys) + " |")
  lines.append("|" + "|".join("---:" if k != "state" else "---" for k in keys) + "|")
  for row in rows:
    lines.append("| " + " | ".join(_cell(k, row[k]) for k in keys) + " |")
  return "\n".join(lines) + "\n"


def best_record(records, mode):
  """The best COMPLETE trial with a value, else the best PRUNED one, else None."""
  for state in ("COMPLETE", "PRUNED"):
    candidates = [r for r in records if r["state"] == state and _value(r.get("best")) is not None]
    if candidates:
      return ranked(candidates, mode)[0]
  return None


def best_command(records, metric, mode):
  """The argv of the best trial (see `best_record`), or None."""
  del metric
  r = best_record(records, mode)
  return None if r is None else list(r["command"])


def read_metrics(workdir):
  """(train, eval) rows of <workdir>/metrics.jsonl, each sorted by step; a step logged twice
  (a resumed run appends) keeps its last row. Missing file: two empty lists."""
  by_prefix = {"train/": {}, "eval/": {}}
  path = os.path.join(workdir, "metrics.jsonl")
  if not storage.exists(path):
    return [], []
  for line in storage.read_text(path).splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # a line cut short by a kill
      continue
    for prefix, rows in by_prefix.items():
      if "step" in row and any(k.startswith(prefix) for k in row):
        rows[int(row["step"])] = row
  return tuple([rows[s] for s in sorted(rows)] for rows in by_prefix.values())


def eval_curve(workdir, metric):
  """(steps, values) of eval/<metric> in the trial's metrics.jsonl."""
  key = "eval/" + _metric_name(metric)
  points = [(row["step"], row[key]) for row in read_metrics(workdir)[1] if key in row]
  return [p[0] for p in points], [float(p[1]) for p in points]


def _label(record, max_len=48):
  """ "trial N" and its overrides, briefly (the last part of each dotted field name)."""
  overrides = record.get("overrides") or {}
  parts = [f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in overrides.items()]
  label = f"trial {record['trial']}" + (": " + ", ".join(parts) if parts else "")
  return label if len(label) <= max_len else label[: max_len - 3] + "..."


LINESTYLES = {"COMPLETE": "-", "PRUNED": "--", "FAIL": ":"}
MARKERS = {"COMPLETE": "o", "PRUNED": "x"}


def _plot_curves(ax, records, metric, mode):
  """One Line2D per trial with eval rows: eval/<metric> against step."""
  name = _metric_name(metric)
  best = best_record(records, mode)
  for r in sorted(records, key=lambda r: r["trial"]):
    steps, values = eval_curve(r["workdir"], name)
    if not steps:
      continue
    is_best = best is not None and r["trial"] == best["trial"]
    ax.plot(
      steps,
      values,
      LINESTYLES.get(r["state"], "-"),
      marker=".",
      linewidth=2.5 if is_best else 1.2,
      label=_label(r) + (" (best)" if is_best else ""),
    )
  ax.set_title(f"eval {name} per trial")
  ax.set_xlabel("step")
  ax.set_ylabel(f"eval {name}")
  if ax.get_lines():
    ax.legend(fontsize="x-small")


def _is_number(v):
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _plot_field(ax, records, field, metric, mode):
  """The best objective against one swept field's value; failed trials left out."""
  points = [
    (r["overrides"][field], _value(r.get("best")), r["state"])
    for r in records
    if r["state"] != "FAIL"
    and field in (r.get("overrides") or {})
    and _value(r.get("best")) is not None
  ]
  numeric = points and all(_is_number(p[0]) for p in points)
  if not numeric:
    points = [(_short(x), y, s) for x, y, s in points]  # a categorical axis
  for state in sorted({p[2] for p in points}):
    xs = [p[0] for p in points if p[2] == state]
    ys = [p[1] for p in points if p[2] == state]
    ax.scatter(xs, ys, marker=MARKERS.get(state, "^"), label=state.lower())
  if numeric:
    xs = [float(p[0]) for p in points]
    if min(xs) > 0 and max(xs) > 20 * min(xs):
      ax.set_xscale("log")
  ax.set_title(field)
  ax.set_xlabel(field)
  ax.set_ylabel(f"best eval {_metric_name(metric)} ({mode})")
  if points:
    ax.legend(fontsize="x-small")


def plot(records, metric, mode, path):
  """The sweep's figure, also saved as a PNG at `path`: fig.axes[0] holds the eval curves (one
  line per trial with eval rows), then one scatter per swept field."""
  _check_mode(mode)
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  names = fields(records)
  cols = 1 if len(names) <= 2 else 2
  nrows = max(1, math.ceil(len(names) / cols))
  fig = Figure(figsize=(7 + 4 * cols * bool(names), max(4.5, 3.2 * nrows)), layout="constrained")
  FigureCanvasAgg(fig)
  grid = fig.add_gridspec(nrows, 1 + cols, width_ratios=[1.8] + [1] * cols)
  _plot_curves(fig.add_subplot(grid[:, 0]), records, metric, mode)
  for i, field in enumerate(names):
    ax = fig.add_subplot(grid[i // cols, 1 + i % cols])
    _plot_field(ax, records, field, metric, mode)
  fig.suptitle(f"sweep: {len(records)} trials, objective {_objective(metric, mode)}")
  fig.savefig(path, dpi=100)
  return fig


def _hparam(v):
  """A value TensorBoard's HParams take: int, float, str or bool (numpy numbers as Python's);
  anything else as str."""
  if isinstance(v, (str, bool)):
    return v
  if isinstance(v, numbers.Integral):
    return int(v)
  if isinstance(v, numbers.Real):
    return float(v)
  return str(v)


def _end_info(sei, state):
  """tensorboardX's session end info with the trial's status (it always says success)."""

  from tensorboardX.proto.api_pb2 import Status
  from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

  status = {"COMPLETE": "STATUS_SUCCESS", "PRUNED": "STATUS_SUCCESS", "FAIL": "STATUS_FAILURE"}.get(
    state, "STATUS_RUNNING"
  )
  plugin_data = sei.value[0].metadata.plugin_data
  content = HParamsPluginData.FromString(plugin_data.content)
  content.session_end_info.status = Status.Value(status)
  plugin_data.content = content.SerializeToString()
  return sei


def write_hparams(record, metric, directory):
  """Writes the trial's HParams session into `directory` (the trial's own tensorboard/, so that
  its scalars are the session's metrics): hparams = the overrides, "trial" and "state"; the
  scalar sweep/<metric> = best at the last evaluated step. The session goes into an event file
  ending in ".hparams"; if one is there already the trial counts as written and nothing is
  added (returns False; True when written).

  Only the session start and end summaries are written, not tensorboardX's experiment summary:
  with none, TensorBoard builds the experiment from all the sessions, so the hparams columns
  are the union over the trials and the metrics are every scalar of their runs (eval/loss,
  sweep/loss, ...), rather than the one trial's experiment it would pick."""
  metrics.import_tensorboardx()  # (without torch)
  from tensorboardX import summary, writer

  if storage.isdir(directory) and any(
    f.name.endswith(HPARAMS_SUFFIX) for f in storage.path(directory).iterdir()
  ):
    return False
  hparams = {k: _hparam(v) for k, v in (record.get("overrides") or {}).items()}
  hparams.update(trial=int(record["trial"]), state=str(record["state"]))
  tag = "sweep/" + _metric_name(metric)
  best = _value(record.get("best"))
  _, ssi, sei = summary.hparams(hparams, {tag: best})
  fw = writer.FileWriter(directory, filename_suffix=HPARAMS_SUFFIX)
  try:
    fw.add_summary(ssi)
    if best is not None:
      fw.add_summary(summary.scalar(tag, best), global_step=record.get("steps") or 0)
    fw.add_summary(_end_info(sei, record["state"]))
  finally:
    fw.close()
  return True


def edge_notes(records, mode):
  """A line for each numeric swept field whose best value is the smallest or largest of three
  or more values tried: the optimum may lie beyond, so the grid or range should go further."""
  best = best_record(records, mode)
  if best is None:
    return []
  notes = []
  for field in fields(records):
    tried = sorted(
      {r["overrides"][field] for r in records if _is_number((r.get("overrides") or {}).get(field))}
    )
    value = (best.get("overrides") or {}).get(field)
    if len(tried) < 3 or not _is_number(value) or value not in (tried[0], tried[-1]):
      continue
    edge, way = ("smallest", "below") if value == tried[0] else ("largest", "above")
    notes.append(
      f"note: the best {field}={_short(value)} is the {edge} value tried; the "
      f"optimum may lie {way} it: extend the grid or range {way} {_short(value)}"
    )
  return notes


def write_report(records, metric, mode, sweepdir, trials_dir=None):
  """Writes results.csv, results.md and sweep.png into `sweepdir` and the HParams of every
  finished trial into its tensorboard/ (in `trials_dir`, by default <sweepdir>/trials);
  returns the text to print."""
  rows = table(records, metric, mode)
  csv_path = os.path.join(sweepdir, "results.csv")
  md_path = os.path.join(sweepdir, "results.md")
  png_path = os.path.join(sweepdir, "sweep.png")
  write_csv(rows, csv_path)
  text = markdown(rows, metric, mode)
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(text)
  plot(records, metric, mode, png_path)
  for r in records:
    if r["state"] in FINISHED:
      write_hparams(r, metric, os.path.join(r["workdir"], "tensorboard"))
  lines = [text]
  best = best_record(records, mode)
  if best is None:
    lines.append("no finished trial has a value yet")
  else:
    lines.append(f"best trial {best['trial']}: {_metric_name(metric)} {_value(best['best']):.4g}")
    lines.append(shlex.join(best["command"]))
    lines += edge_notes(records, mode)
  lines += [
    "",
    f"table: {csv_path} (and {md_path})",
    f"plot: {png_path}",
    f"side by side: tensorboard --logdir {trials_dir or os.path.join(sweepdir, 'trials')}",
  ]
  return "\n".join(lines) + "\n"
