"""A run's evaluation record: every evaluation, the best one, and the best checkpoint.

After each evaluation the trainer adds its metrics here. `config.train.best_metric` (eval loss
by default; a fine-tuning task's dev metric: accuracy, Matthews correlation, F1, ...) ranks
them, and with `config.checkpoint.keep_best` the best step's full state is saved to
<workdir>/best beside the latest checkpoints (`pretrain.evaluate --best` reads it). The record
is <workdir>/results.json, rewritten after every evaluation: {"best_metric", "best_mode",
"best": row, "history": [rows]} with a row per evaluation (step, epoch, metrics). A resumed run
keeps the rows up to the step it resumes from, so reruns never count an evaluation twice. At
the end of the run a table of the evaluations is printed.
"""

import json
import os

from pretrain.ground import errors, storage
from pretrain.state import checkpointer
from pretrain.training import metrics


def read_history(workdir):
  """The evaluations recorded in <workdir>/results.json so far ([] before the first; the file
  is replaced whole, so a reader beside a running job never sees half of it)."""
  path = os.path.join(workdir, "results.json")
  if not storage.exists(path):
    return []
  return json.loads(storage.read_text(path))["history"]


class Results:
  def __init__(self, config, workdir, resumed_step, enabled):
    """`resumed_step`: the step the run starts from (None: a fresh run); `enabled`: this
    process writes the record (process 0)."""
    self.metric, self.mode, self.enabled = config.train.best_metric, config.train.best_mode, enabled
    self.path = os.path.join(workdir, "results.json")
    self.history = []
    if resumed_step is not None:
      self.history = [r for r in read_history(workdir) if r["step"] <= resumed_step]
    self.best_ckpt = None
    if config.checkpoint.keep_best:
      self.best_ckpt = checkpointer.Checkpointer(
        os.path.join(workdir, "best"), keep=1, async_save=config.checkpoint.async_save
      )
      for step in self.best_ckpt.all_steps():  # beyond the resumed step: redone identically
        if resumed_step is None or step > resumed_step:
          self.best_ckpt.manager.delete(step)

  @property
  def best(self):
    if not self.history:
      return None
    pick = max if self.mode == "max" else min
    return pick(self.history, key=lambda r: r[self.metric])  # the earliest of ties

  def add(self, step, epoch, eval_metrics, state, meta):
    """Records one evaluation; saves the state as the best checkpoint if it is the best."""
    if self.metric not in eval_metrics:
      raise errors.UserError(
        f"config.train.best_metric: {self.metric!r} is not among the eval metrics "
        f"({', '.join(sorted(eval_metrics))}); set it to one of them"
      )
    row = dict(
      step=step, epoch=round(float(epoch), 4), **{k: float(v) for k, v in eval_metrics.items()}
    )
    self.history.append(row)
    if self.best is row and self.best_ckpt is not None:
      self.best_ckpt.save(step, state, meta, force=True)
    if self.enabled:
      storage.write_json(
        self.path,
        dict(best_metric=self.metric, best_mode=self.mode, best=self.best, history=self.history),
      )

  def table(self):
    """The evaluations as text, the best marked with '*'."""
    if not self.history:
      return ""
    keys = [k for k in self.history[-1] if k not in ("step", "epoch") and "/" not in k]
    keys.sort(key=lambda k: (k != self.metric, k))
    lines = ["  ".join(f"{h:>10}" for h in ["step", "epoch"] + keys)]
    best = self.best
    for row in self.history:
      cells = [f"{row['step']:>10}", f"{row['epoch']:>10.2f}"]
      cells += [f"{row.get(k, float('nan')):>10.4f}" for k in keys]
      lines.append("  ".join(cells) + (" *" if row is best else ""))
    where = f"; its checkpoint is in {self.best_ckpt.directory}" if self.best_ckpt else ""
    lines.append(
      f"best {self.metric} ({self.mode}): {metrics.format_metrics({self.metric: best[self.metric]})} "
      f"at step {best['step']}{where}; all in {self.path}"
    )
    return "\n".join(lines)

  def close(self):
    if self.best_ckpt is not None:
      self.best_ckpt.close()
