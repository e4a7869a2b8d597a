"""A run's length: config.train.epochs, total_tokens or total_steps, one at a time; the one
given on the command line replaces the config file's."""

import pytest
from absl import flags
from ml_collections import config_flags

from configs import gpt
from pretrain.training import config_checks, durations


def _parsed(*argv, config="configs/finetune/glue.py:sst2"):
  argv = ["prog", f"--config={config}", *argv]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
  values(argv)
  return values["config"].value, config_flags.get_override_values(values["config"])


def test_the_command_line_length_replaces_the_recipes_epochs():
  config, overrides = _parsed("--config.train.total_steps=60")
  assert config.train.epochs == 3.0  # the recipe's
  line = durations.prefer_command_line(config.train, overrides)
  assert line == (
    "run length: config.train.total_steps=60 from the command line replaces the "
    "config file's epochs"
  )
  assert (config.train.epochs, config.train.total_steps) == (0.0, 60)
  assert durations.total_steps(config, train_examples=67_349) == 60
  assert durations.length_conflict(config.train) is None


def test_nothing_given_or_nothing_replaced_changes_nothing():
  config, overrides = _parsed()
  assert durations.prefer_command_line(config.train, overrides) is None
  config, overrides = _parsed("--config.train.total_steps=60", config="configs/gpt.py:smoke")
  assert durations.prefer_command_line(config.train, overrides) is None  # steps replace steps
  assert config.train.total_steps == 60


def test_two_lengths_in_a_config_are_an_error_naming_both():
  config = gpt.get_config("smoke")
  config.train.total_tokens = 10_000
  with pytest.raises(
    config_checks.ConfigError,
    match=r"^config.train.total_tokens=10000 and config.train.total_steps=200 "
    r"each set the run's length; keep one and set the other to 0",
  ):
    config_checks.check(config, 1)
