"""Runs on object storage, against a real local GCS emulator (tests/gcs_emulator.py): a
gs:// workdir trains, checkpoints, is killed with SIGKILL and resumes bitwise; the run's files
are all in the bucket; pretrain.evaluate, pretrain.checkpoints and config.init_from read it
from there. A missing bucket or missing credentials fail in one line before compiling.
(Two processes saving and restoring on gs:// are in tests/pretrain/test_multiprocess.py.)"""

import json
import os
import re
import signal
import sys

import fsspec
import jax
import numpy as np
import pytest

from configs import common, gpt
from pretrain import evaluate
from pretrain.ground import errors, storage
from pretrain.state import checkpointer, run_files
from pretrain.training import config_checks, trainer
from tests import helpers
from tests.helpers import REPO, xla_flags

STEPS = 300
OVERRIDES = helpers.TINY_GPT | {
  "train.total_steps": STEPS,
  "train.log_every": 10,
  "train.eval_every": 50,
  "train.eval_batches": 1,
  "train.peak_flops": 1e12,
  "checkpoint.every": 50,
  "checkpoint.async_save": True,
  "checkpoint.keep": 2,
}


def _train_command(workdir, data_dir, **more):
  overrides = dict(OVERRIDES, **{"data.data_dir": data_dir}, **more)
  return [
    sys.executable,
    "-m",
    "pretrain.train",
    "--config=configs/gpt.py:smoke",
    f"--workdir={workdir}",
  ] + helpers.flags(overrides)


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))


def _run(cmd, env=None):
  proc = helpers.run_python(cmd, env or _env())
  return proc


def _state(directory, step):
  ckpt = checkpointer.Checkpointer(directory, read_only=True)
  state = ckpt.read_as_saved(step)
  ckpt.close()
  return jax.tree.map(np.asarray, state)


def _objects(url):
  fs, root = fsspec.core.url_to_fs(url)
  return sorted(os.path.relpath(name, root) for name in fs.find(root))


def _jsonl(url):
  return [json.loads(line) for line in storage.read_text(url).splitlines()]


def _trainer(cmd):
  """The trainer's subprocess, its output watched as it comes (the bucket: the emulator's)."""
  return helpers.Running(cmd, _env())


@pytest.mark.slow
def test_gs_workdir_is_killed_resumes_bitwise_and_is_read_back(gcs, tmp_path, data_dir):
  reference = tmp_path / "reference"  # the same run, uninterrupted, on a local disk
  config = common.apply_overrides(gpt.get_config("smoke"), OVERRIDES | {"data.data_dir": data_dir})
  trainer.train_and_evaluate(config, str(reference), devices=jax.devices()[:1])

  url = gcs("run")
  cmd = _train_command(url, data_dir)
  killed = _trainer(cmd)  # SIGKILL once a checkpoint is in the bucket, before the end
  # (any of them: with keep=2 a fast run deletes step 50's before a slow poll sees it)
  fs, root = fsspec.core.url_to_fs(url)
  assert killed.caught(lambda: fs.glob(f"{root}/checkpoints/*/commit_success.txt"))
  killed.signal(signal.SIGKILL)
  killed.finish()
  assert not storage.exists(f"{url}/checkpoints/{STEPS}")
  resumed = _trainer(cmd).finish()
  [start] = [l for l in resumed.splitlines() if l.startswith(("resumed", "initialised"))]
  assert re.fullmatch(rf"resumed from step \d+ of {STEPS}", start), resumed[-3000:]
  again = int(start.split()[3])

  # Everything of the run is in the bucket, nothing left temporary, and nothing went to a
  # local directory named after the URL (what os.path.abspath would have made of it).
  objects = _objects(url)
  for name in (
    "config.json",
    "tokenizer.json",
    "metrics.jsonl",
    "results.json",
    "goodput.json",
    f"checkpoints/{STEPS - 50}/commit_success.txt",
    f"checkpoints/{STEPS}/commit_success.txt",
  ):
    assert name in objects, objects
  assert any(o.startswith("tensorboard/events.out.tfevents") for o in objects), objects
  assert not [o for o in objects if "orbax-checkpoint-tmp" in o], objects
  assert not (REPO / "gs:").exists()
  steps = [r["step"] for r in _jsonl(f"{url}/metrics.jsonl") if "train/loss" in r]
  # the first attempt's lines (step 10 is before any checkpoint), then the second's, appended
  assert steps[0] == 10 and sorted(set(steps)) == list(range(10, STEPS + 1, 10)) and again >= 50
  assert json.loads(storage.read_text(f"{url}/goodput.json"))["runs"] == 2

  ours, theirs = _state(f"{url}/checkpoints", STEPS), _state(str(reference / "checkpoints"), STEPS)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, ours, theirs)))

  # Read back from the bucket: the checkpoint list and verification, an evaluation ...
  verify = _run([sys.executable, "-m", "pretrain.checkpoints", f"--workdir={url}", "--verify"])
  assert verify.returncode == 0 and verify.stdout.count("ok: complete") == 2, verify.stdout
  evaluate.evaluate_run(
    run_files.run_config(url), url, evaluate.Options(max_batches=1), devices=jax.devices()[:1]
  )
  [row] = _jsonl(f"{url}/eval.jsonl")
  trained = [r for r in _jsonl(f"{url}/metrics.jsonl") if "eval/loss" in r][-1]
  assert row["step"] == STEPS == trained["step"]
  np.testing.assert_allclose(row["loss"], trained["eval/loss"], rtol=1e-6)

  # ... and a run initialised from it (config.init_from=gs://...), with the same tokenizer.
  config = helpers.tiny_gpt_config(
    data_dir, **{"init_from": url, "train.total_steps": 1, "train.eval_every": 0}
  )
  config_checks.check_workdir(url)
  result = trainer.train_and_evaluate(config, str(tmp_path / "from_gs"), devices=jax.devices()[:1])
  assert result.step == 1
  log = (tmp_path / "from_gs" / "metrics.jsonl").read_text()
  assert log  # trained a step from the parameters in the bucket


@pytest.mark.slow
def test_missing_bucket_fails_in_one_line_before_compiling(gcs, tmp_path, data_dir):
  helpers.COMPILES.clear()
  with pytest.raises(
    errors.UserError,
    match=r"--workdir: bucket gs://no-such-bucket does not "
    r"exist; create it \(gcloud storage buckets create gs://no-such-bucket\)",
  ):
    config_checks.check_workdir("gs://no-such-bucket/run")
  config = helpers.tiny_gpt_config(data_dir, init_from="gs://no-such-bucket/run")
  with pytest.raises(errors.UserError, match="config.init_from: bucket gs://no-such-bucket"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not helpers.COMPILES and not (tmp_path / "w").exists()
  config_checks.check_workdir("relative/local/dir")  # local paths as ever

  proc = _run(_train_command("gs://no-such-bucket/run", data_dir))
  assert proc.returncode == 2, proc.stderr[-2000:]
  [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert "gs://no-such-bucket does not exist" in line and "Traceback" not in proc.stderr
  # the tools that read a run say the same
  for tool in ("pretrain.evaluate", "pretrain.checkpoints"):
    proc = _run([sys.executable, "-m", tool, "--workdir=gs://no-such-bucket/run"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
      "error: --workdir: bucket gs://no-such-bucket does not exist; "
      "create it (gcloud storage buckets create gs://no-such-bucket) "
      "or fix the URL"
    ), proc.stderr


def test_missing_credentials_fail_in_one_line(tmp_path, data_dir):
  """With real GCS (no emulator) and no credentials, the run stops at once, naming the fix."""
  env = {
    k: v
    for k, v in _env().items()
    if k
    not in (
      "STORAGE_EMULATOR_HOST",
      "TENSORSTORE_GCS_HTTP_URL",
      "GOOGLE_AUTH_TOKEN_FOR_TESTING",
      "FSSPEC_GS_TOKEN",
    )
  }
  env.update(
    GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing-key.json"),
    CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
    NO_GCE_CHECK="true",
  )
  proc = _run(_train_command("gs://some-bucket/run", data_dir), env=env)
  assert proc.returncode == 2, proc.stderr[-2000:]
  [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert (
    line.startswith("error: --workdir: no Google Cloud credentials to reach 'gs://some-bucket/run'")
    and "gcloud auth application-default login" in line
  )
  assert "Traceback" not in proc.stderr
