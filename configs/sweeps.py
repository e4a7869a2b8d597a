"""Sweeps, declared beside `get_config` in the experiment files.

A config file may define any number of functions named `sweep_<name>()`, each returning a
`Sweep`; `python -m launch.sweep --config=configs/gpt.py:smoke --sweep=<name>` runs it. Three
kinds, each an Optuna sampler:

  def sweep_lr():                                   # a grid: the product of the lists
    return sweeps.grid({"optimizer.lr": [1e-3, 3e-3], "batch.size": [8, 16]})

  def sweep_random():                               # random search over ranges
    return sweeps.random({"optimizer.lr": sweeps.log_uniform(1e-4, 3e-2),
                          "optimizer.warmup_steps": sweeps.choice([10, 50])}, trials=16)

  def sweep_tpe():                                  # adaptive, define-by-run
    def suggest(trial):                             # an optuna.Trial -> one trial's overrides
      lr = trial.suggest_float("optimizer.lr", 1e-4, 3e-2, log=True)
      return {"optimizer.lr": lr, "optimizer.min_lr": lr / 10}
    return sweeps.tpe(suggest, trials=32, pruner="median")

`tpe` and `random` also take a dict of ranges. The sweep ranks trials by `metric` (an eval
metric, as in results.json: 'loss', 'accuracy', 'f1', ...) in `mode` ('min'/'max'); both
default to the config's train.best_metric / train.best_mode. `pruner` ('none', 'median',
'halving') stops trials whose intermediate evaluations fall behind. Nothing here imports Optuna.
"""

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

PRUNERS = ("none", "median", "halving")


@dataclasses.dataclass(frozen=True)
class Range:
  """A range to sample from: 'float' or 'int' in [low, high] (log-uniform with `log`), or
  'choice' among `values`."""

  kind: str
  low: float = 0.0
  high: float = 0.0
  log: bool = False
  values: tuple = ()


def uniform(low, high):
  return Range("float", low, high)


def log_uniform(low, high):
  return Range("float", low, high, log=True)


def integers(low, high, log=False):
  return Range("int", low, high, log=log)


def choice(values):
  return Range("choice", values=tuple(values))


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What `launch.sweep` runs: `space` (field -> list of values for a grid, field -> Range
  otherwise) or `suggest` (trial -> overrides), the sampler, and how trials are ranked."""

  sampler: str  # 'grid', 'random' or 'tpe'
  trials: int  # how many (a grid: the product of its lists)
  space: dict = dataclasses.field(default_factory=dict)
  suggest: Callable[[Any], dict] | None = None
  metric: str = ""  # '' : config.train.best_metric
  mode: str = ""  # '' : config.train.best_mode
  pruner: str = "none"
  seed: int = 0

  def fields(self):
    """The swept fields known before running (define-by-run sweeps name theirs as they go)."""
    return list(self.space)

  def points(self):
    """A grid's points, in order: [{field: value}]."""
    names = list(self.space)
    return [dict(zip(names, values)) for values in itertools.product(*self.space.values())]


def grid(space, **kw):
  """Every combination of `space`'s lists (field -> values)."""
  return Sweep("grid", math.prod(len(v) for v in space.values()), space=dict(space), **kw)


def random(space, trials, **kw):
  """`trials` independent draws from `space` (field -> Range, or a list: a choice)."""
  return Sweep("random", trials, space=_ranges(space), **kw)


def tpe(space_or_suggest, trials, **kw):
  """Optuna's TPE sampler over `space` (field -> Range) or a define-by-run `suggest(trial)`
  that returns one trial's overrides."""
  if callable(space_or_suggest):
    return Sweep("tpe", trials, suggest=space_or_suggest, **kw)
  return Sweep("tpe", trials, space=_ranges(space_or_suggest), **kw)


def _ranges(space):
  return {k: v if isinstance(v, Range) else choice(v) for k, v in space.items()}
