"""Test set-up: 8 fake CPU devices (so every sharding path runs here) and tiny configs."""

import gc
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# (tests/helpers.py imports the standard library alone: nothing in it reads XLA_FLAGS)
from tests.helpers import COMPILE_EVENTS, FAST_COMPILE

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 " + FAST_COMPILE
).strip()


import tempfile

# One persistent compilation cache per test run, shared by the pytest-xdist workers and by the
# subprocesses the tests start: the same tiny programs, compiled again by every resumed,
# restarted or compared run, compile once. (A cache hit counts as a compile in COMPILES.)
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # else the user's: never removed
os.environ.setdefault(
  "JAX_COMPILATION_CACHE_DIR",
  os.path.join(tempfile.gettempdir(), f"pretrain-tests-jax-cache-{_RUN}"),
)
# The project's own cache (the measured CPU matmul peak, mirrors of gs:// data) per run too.
_OWN_PRETRAIN_CACHE = "PRETRAIN_CACHE_DIR" not in os.environ
os.environ.setdefault(
  "PRETRAIN_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"pretrain-tests-cache-{_RUN}")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
_ENVIRON = dict(os.environ)  # the entry-point driver's, whatever a test sets later

import pytest

from tests.helpers import (
  COMPILES,
  REPO,
  python_module,
  tiny_bert_config,
  tiny_gpt_config,
  write_sentence_corpus,
)


def _record_compiles():
  import jax

  jax.monitoring.register_event_duration_secs_listener(
    lambda event, _, **kw: COMPILES.append(event) if event == COMPILE_EVENTS[0] else None
  )
  jax.monitoring.register_event_listener(
    lambda event, **kw: COMPILES.append(event) if event == COMPILE_EVENTS[1] else None
  )


_record_compiles()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data_dir (and tokenizer cache) shared by the whole session."""
  return str(tmp_path_factory.mktemp("tfds_data"))


@pytest.fixture
def tiny_config(data_dir):
  return lambda **overrides: tiny_gpt_config(data_dir, **overrides)


@pytest.fixture(scope="session")
def sentence_corpus(tmp_path_factory):
  return write_sentence_corpus(tmp_path_factory.mktemp("corpus") / "sentences.txt")


@pytest.fixture
def tiny_bert(data_dir, sentence_corpus):
  return lambda **kw: tiny_bert_config(data_dir, sentence_corpus, **kw)


@pytest.fixture(scope="session")
def capitals_run(tmp_path_factory, data_dir):
  """A tiny GPT that has memorised the facts of tests/fixtures/lm_eval/capitals.jsonl ("the
  capital of france is paris.", shuffled in 200 documents): word-level BPE, 400 steps (about
  10 s); checkpoints at steps 100 (near chance), 200, 300 and 400 (every fact).
  Returns (workdir, path of the items)."""
  import json
  import random

  import jax

  from pretrain.training import trainer

  items = REPO / "tests" / "fixtures" / "lm_eval" / "capitals.jsonl"
  facts = [
    f"{d['context']} {d['endings'][d['label']]}."
    for d in map(json.loads, items.read_text().splitlines())
  ]
  r = random.Random(0)
  corpus = tmp_path_factory.mktemp("capitals") / "capitals.txt"
  corpus.write_text("\n\n".join(" ".join(r.sample(facts, len(facts))) for _ in range(200)))
  config = tiny_gpt_config(
    data_dir,
    **{
      "data.files": str(corpus),
      "data.tokenizer.vocab_size": 512,
      "model.d_model": 64,
      "train.total_steps": 400,
      "train.log_every": 100,
      "checkpoint.every": 100,
      "checkpoint.keep": 4,
    },
  )
  workdir = str(tmp_path_factory.mktemp("capitals_run"))
  trainer.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  return workdir, str(items)


@pytest.fixture(scope="session")
def gcs():
  """A local GCS emulator (tests/gcs_emulator.py: the gcp-storage-emulator package) holding the bucket
  gs://test-bucket, and this process's environment pointed at it (STORAGE_EMULATOR_HOST; see
  pretrain/ground/storage.py for what it sets): the subprocesses tests start inherit it. Yields a
  function giving a fresh gs:// URL under the bucket. Skips when the emulator is absent."""
  import importlib.util
  import itertools
  import socket
  import subprocess
  import sys
  import time

  for package in ("gcp_storage_emulator", "gcsfs"):  # (not imported: gcsfs reads the env then)
    if importlib.util.find_spec(package) is None:
      pytest.skip(f"{package} is not installed")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = subprocess.Popen(
    [sys.executable, str(REPO / "tests" / "gcs_emulator.py"), str(port), "test-bucket"],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 30
  while True:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      break
    except OSError:
      if time.time() > deadline or server.poll() is not None:
        server.kill()
        pytest.fail("the GCS emulator did not start")
      time.sleep(0.1)
  url = f"http://127.0.0.1:{port}"
  previous = dict(os.environ)
  os.environ["STORAGE_EMULATOR_HOST"] = url
  from pretrain.ground import storage

  storage.configure()  # every client's settings for it, as a run started with it has them
  counter = itertools.count()
  yield lambda name="run": f"gs://test-bucket/{name}-{os.getpid()}-{next(counter)}"
  os.environ.clear()
  os.environ.update(previous)
  server.kill()
  server.wait()


def pytest_collection_finish(session):
  """Every test module and the libraries they use are imported: their objects live as long as
  the run, so the garbage collector stops scanning them (gc.freeze). Tracing and compiling
  create many short-lived objects, and each full collection walked the whole heap again: it
  took about a tenth of the suite's CPU time."""
  gc.collect()
  gc.freeze()


def pytest_sessionfinish(session):
  """The run's caches go with the run (removed by the process that named them)."""
  import shutil

  if _OWN_CACHE and not hasattr(session.config, "workerinput") and _RUN == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  if (
    _OWN_PRETRAIN_CACHE and not hasattr(session.config, "workerinput") and _RUN == str(os.getpid())
  ):
    shutil.rmtree(os.environ["PRETRAIN_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def entry_point():
  """`python -m module args` (in `cwd`, the checkout by default) as a forked child of one
  interpreter that has the libraries imported (tests/entry_points.py), with one real CPU
  device and XLA's default flags, as a reader has (pretrain.aot makes its own fake devices):
  each command costs what the entry point does, not an interpreter's start-up."""
  env = dict(_ENVIRON, JAX_PLATFORMS="cpu", XLA_FLAGS="", PYTHONPATH=str(REPO))
  return lambda module, *args, cwd=REPO: python_module(module, *args, env=env, cwd=cwd)
