"""How long a run is and how often things happen."""
import math


def steps_per_epoch(config, train_examples):
  return max(1, math.ceil(train_examples / config.batch.size))


def total_steps(config, train_examples=None):
  """config.train.epochs over `train_examples` (if both are known and > 0), else
  config.train.total_tokens (if > 0) converted to steps, else config.train.total_steps."""
  if config.train.epochs > 0 and train_examples:
    return math.ceil(config.train.epochs * steps_per_epoch(config, train_examples))
  if config.train.total_tokens > 0:
    return math.ceil(config.train.total_tokens / (config.batch.size * config.batch.seq_len))
  return config.train.total_steps


def cadence(n, config, train_examples):
  """A cadence in steps: n, or once per epoch when n is -1 (and the epoch is known)."""
  if n == -1 and train_examples:
    return steps_per_epoch(config, train_examples)
  return n


def every(step, n):
  """True on every n-th step (n <= 0 never fires)."""
  return n > 0 and step % n == 0
