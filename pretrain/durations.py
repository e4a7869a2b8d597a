"""How long a run is and how often things happen."""
import math


def total_steps(config):
  """config.train.total_tokens (if > 0) converted to steps, else config.train.total_steps."""
  if config.train.total_tokens > 0:
    return math.ceil(config.train.total_tokens / (config.batch.size * config.batch.seq_len))
  return config.train.total_steps


def every(step, n):
  """True on every n-th step (n <= 0 never fires)."""
  return n > 0 and step % n == 0
