"""The evaluator: metrics of a set of parameters over one or several validation loaders.

The trainer's periodic evaluation and `pretrain.evaluate` both use it, so their numbers agree.
A split is read in order, batch by batch; the last partial batch is padded (rows past the
end of the split wrap around and carry weight 0), so every example counts exactly once.
Metrics are reported per dataset ('<name>/<metric>' for a mixture's datasets) and over all of
them together (token-weighted, as in training).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import tqdm


class Evaluator:
  def __init__(self, objective, loaders, steps, *, token_bytes=None, max_batches=0, progress=False):
    """`loaders`: {name: StepIndexed} ('' for a single dataset); `steps`: a steps.Steps;
    `token_bytes`: UTF-8 bytes per token id (bits per byte for causal LM); `max_batches`:
    at most this many batches of each split (0: the whole split)."""
    self.objective, self.loaders, self.steps = objective, loaders, steps
    self.token_bytes, self.max_batches = token_bytes, max_batches
    self.progress = progress and jax.process_index() == 0
    local = next(iter(loaders.values())).batch_size // jax.process_count()
    self.rows = np.arange(jax.process_index() * local, (jax.process_index() + 1) * local)

  def num_batches(self, loader):
    n = max(1, math.ceil(loader.num_examples / loader.batch_size))
    return min(n, self.max_batches) if self.max_batches else n

  def batch(self, loader, i):
    """This process's rows of evaluation batch i, padding rows weighted 0, as global arrays."""
    valid = i * loader.batch_size + self.rows < loader.num_examples
    batch = self.objective.eval_batch(loader.eval_batch(i, self.rows), valid, self.token_bytes)
    return self.steps.to_global(batch)

  def run(self, params, name):
    """(summed metrics and denominators, predictions of every example in order) of one
    dataset's split; predictions only for objectives that make them (fine-tuning tasks)."""
    loader, total, predictions = self.loaders[name], None, []
    batches = range(self.num_batches(loader))
    if self.progress:
      batches = tqdm.tqdm(batches, desc=f"eval {name}".strip(), leave=False, unit="batch")
    for i in batches:
      out, preds = self.steps.eval(params, self.batch(loader, i))
      total = out if total is None else jax.tree.map(jnp.add, total, out)
      if preds:
        valid = min(loader.batch_size, loader.num_examples - i * loader.batch_size)
        predictions.append(jax.tree.map(lambda x, n=valid: np.asarray(x)[:n], preds))
    if predictions:
      predictions = jax.tree.map(lambda *xs: np.concatenate(xs), *predictions)
      predictions = loader.per_example(predictions)
    return jax.device_get(total), predictions or None

  def per_dataset(self, params):
    """{name: (summed metrics, predictions or None)} for every dataset."""
    return {name: self.run(params, name) for name in self.loaders}

  def summarize(self, per):
    """Metrics per dataset ('name/metric') and over all of them together; a task's own
    metrics (from the whole split's predictions) beside its loss."""
    total = jax.tree.map(lambda *xs: np.sum(xs, axis=0), *(s for s, _ in per.values()))
    out = dict(self.objective.summarize(total))
    for name, (sums, predictions) in per.items():
      metrics = dict(self.objective.summarize(sums))
      if predictions is not None and self.objective.score is not None:
        metrics.update(self.objective.score(predictions, self.loaders[name]))
      out.update({f"{name}/{k}" if name else k: v for k, v in metrics.items()})
    return out

  def __call__(self, params):
    return self.summarize(self.per_dataset(params))
