"""How long a run is and how often things happen."""

import math

# The fields that set a run's length; one of them at most is > 0.
LENGTH_FIELDS = ("epochs", "total_tokens", "total_steps")


def length_conflict(train):
  """A one-line error when more than one of LENGTH_FIELDS is set (> 0), else None."""
  given = [f"config.train.{f}={train[f]}" for f in LENGTH_FIELDS if train[f] > 0]
  if len(given) < 2:
    return None
  return (
    f"{' and '.join(given)} each set the run's length; keep one and set the other to 0 "
    "(on the command line, the one given replaces the config file's)"
  )


def prefer_command_line(train, overrides):
  """When the command line (`overrides`: field path -> value) sets exactly one of the
  LENGTH_FIELDS, turns off the others the config file set, and returns a line saying so."""
  given = [f for f in LENGTH_FIELDS if f"train.{f}" in overrides and train[f] > 0]
  replaced = [f for f in LENGTH_FIELDS if f not in given and train[f] > 0]
  if len(given) != 1 or not replaced:
    return None
  for f in replaced:
    train[f] = type(train[f])(0)
  return (
    f"run length: config.train.{given[0]}={train[given[0]]} from the command line "
    f"replaces the config file's {', '.join(replaced)}"
  )


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
