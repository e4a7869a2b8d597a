"""Test set-up: 8 fake CPU devices (so every sharding path runs here) and tiny configs."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import pathlib  # pylint: disable=g-import-not-at-top

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data_dir (and tokenizer cache) shared by the whole session."""
  return str(tmp_path_factory.mktemp("tfds_data"))


def tiny_gpt_config(data_dir, **overrides):
  """The smoke config shrunk further: compiles and runs a step in well under a second."""
  from configs import gpt  # pylint: disable=g-import-not-at-top
  config = gpt.get_config("smoke")
  config.data.data_dir = data_dir
  config.data.tokenizer.vocab_size = 256
  config.model.update(num_layers=2, num_heads=4, d_model=32, max_len=32)
  config.batch.update(size=8, seq_len=32)
  config.train.update(total_steps=6, log_every=3, eval_every=0, eval_batches=1, peak_flops=1e12)
  config.checkpoint.update(every=3, async_save=False)
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


@pytest.fixture
def tiny_config(data_dir):
  return lambda **overrides: tiny_gpt_config(data_dir, **overrides)
