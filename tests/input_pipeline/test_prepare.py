"""`python -m input_pipeline.prepare` refuses a worker index outside [0, --process_count)."""

import os
import sys

import pytest

from tests import helpers


def _prepare(tmp_path, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return helpers.run_python(
    [
      sys.executable,
      "-m",
      "input_pipeline.prepare",
      "--config=configs/gpt.py:smoke",
      f"--config.data.data_dir={tmp_path / 'data'}",
      *args,
    ],
    env,
  )


@pytest.mark.slow
@pytest.mark.parametrize("index,count", [(2, 2), (5, 2), (-1, 2), (1, 1)])
def test_process_index_out_of_range_is_a_usage_error(tmp_path, index, count):
  proc = _prepare(tmp_path, f"--process_count={count}", f"--process_index={index}")
  assert proc.returncode != 0
  assert "--process_index must be in [0, --process_count)" in proc.stderr, proc.stderr[-2000:]
  assert "--process_count" in proc.stderr and not proc.stdout
  assert not (tmp_path / "data").exists()  # refused before any work


def test_last_process_index_passes_the_check(tmp_path):
  """The largest valid index goes on to the data (here a dataset that does not exist)."""
  proc = _prepare(
    tmp_path, "--process_count=2", "--process_index=1", "--config.data.dataset=no_such_dataset"
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--process_index" not in proc.stderr and "no_such_dataset" in proc.stderr
