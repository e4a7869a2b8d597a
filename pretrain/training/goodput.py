"""Goodput: the share of a run's wall time spent training, and where the rest went.

Badput is counted by kind, as MaxText's goodput monitoring does: start-up (set-up, data
preparation, restore), compiling the first step, loading data on the host, evaluation,
checkpoint saves (the part that blocks training), and steps redone after a restart (those a
killed run had reached beyond its last checkpoint, at that run's time per step). The record is
cumulative over restarts: <workdir>/goodput.json carries the totals of earlier runs, so a
resumed run reports the goodput of the whole job.
"""

import json
import os
import time

from pretrain.ground import storage

KINDS = ("startup", "compile", "data", "eval", "checkpoint", "redone")


class Goodput:
  def __init__(self, workdir, enabled):
    self.path = os.path.join(workdir, "goodput.json")
    self.enabled = enabled
    self.began = time.perf_counter()
    self.seconds = dict.fromkeys(KINDS, 0.0)
    self.earlier = {
      "runs": 0,
      "wall": 0.0,
      "step": 0,
      "step_time": 0.0,
      **dict.fromkeys(KINDS, 0.0),
    }
    if storage.exists(self.path):
      self.earlier.update(json.loads(storage.read_text(self.path)))
    self.step, self.step_time = 0, 0.0

  def resumed(self, step):
    """Steps the earlier runs reached beyond `step` (where this run starts) are done again."""
    self.step = step
    redone = max(0, self.earlier["step"] - step)
    self.seconds["redone"] = redone * self.earlier["step_time"]

  def add(self, kind, seconds):
    self.seconds[kind] += seconds

  def timed(self, kind):
    """A context that adds the time spent inside to `kind`."""
    return _Timer(self, kind)

  def reached(self, step, step_time):
    self.step = step
    if step_time == step_time:  # not NaN
      self.step_time = step_time

  def totals(self):
    """Cumulative seconds by kind, with 'wall' and 'runs', including this run so far."""
    wall = time.perf_counter() - self.began
    out = {k: self.earlier[k] + self.seconds[k] for k in KINDS}
    out.update(wall=self.earlier["wall"] + wall, runs=self.earlier["runs"] + 1)
    return out

  def shares(self):
    """{'goodput': share of wall time training, '<kind>': share of each badput}."""
    t = self.totals()
    bad = {k: t[k] / t["wall"] for k in KINDS}
    return dict(goodput=max(0.0, 1.0 - sum(bad.values())), **bad)

  def save(self):
    """Writes the cumulative record (after each log window and at the end)."""
    if self.enabled:
      t = self.totals()
      storage.write_json(self.path, dict(t, step=self.step, step_time=self.step_time))

  def describe(self):
    t, s = self.totals(), self.shares()
    parts = ", ".join(f"{k} {100 * s[k]:.1f}%" for k in KINDS if s[k] >= 0.0005)
    runs = f" over {t['runs']} runs" if t["runs"] > 1 else ""
    return f"goodput {100 * s['goodput']:.1f}% of {t['wall']:.0f} s{runs} ({parts})"


class _Timer:
  def __init__(self, goodput, kind):
    self.goodput, self.kind = goodput, kind

  def __enter__(self):
    self.began = time.perf_counter()

  def __exit__(self, *exc):
    self.goodput.add(self.kind, time.perf_counter() - self.began)
