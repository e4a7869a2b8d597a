"""Test set-up: 8 fake CPU devices (so every sharding path runs here) and tiny configs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests compile many small programs and run each for a few steps: LLVM's optimisation of
# the generated CPU code costs more than it saves (about a quarter of the suite's time), and
# XLA:CPU's MLIR fusion emitters take twice as long to compile a train step as its elemental
# emitters (5.9 s against 3.0 s for the tiny GPT's sharded step). Every run a test compares
# with another is compiled the same way (subprocesses: xla_flags()).
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 " + FAST_COMPILE
).strip()


def xla_flags(devices):
  """XLA_FLAGS for a test's subprocess with `devices` CPU devices (0: the real one)."""
  count = f"--xla_force_host_platform_device_count={devices} " if devices else ""
  return count + FAST_COMPILE


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

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Every XLA compilation of this process, by JAX's monitoring events for a backend compile and
# for a program found in the compilation cache: tests that promise "fails before compiling"
# clear it and check it stays empty (and tests/pretrain/test_errors.py checks that a valid run
# does record one here).
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
COMPILES = []


def _record_compiles():
  import jax

  jax.monitoring.register_event_duration_secs_listener(
    lambda event, _, **kw: COMPILES.append(event) if event == COMPILE_EVENT else None
  )
  jax.monitoring.register_event_listener(
    lambda event, **kw: COMPILES.append(event) if event == CACHE_HIT_EVENT else None
  )


_record_compiles()


def randomise_hf(model, seed):
  """A `transformers` model with weights of order 1 (norm scales about 1, the rest about 0):
  HF's initialisation is near zero, which would make any comparison of outputs easy."""
  import torch

  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen) * 0.2
      is_norm = "ln_" in name or "norm" in name.lower()  # GPT-2's ln_*, *LayerNorm, *norm
      p.copy_(1.0 + noise if is_norm else noise)
  return model


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """One tfds data_dir (and tokenizer cache) shared by the whole session."""
  return str(tmp_path_factory.mktemp("tfds_data"))


def tiny_gpt_config(data_dir, **overrides):
  """The smoke config shrunk further: compiles and runs a step in well under a second."""
  from configs import common, gpt

  config = gpt.get_config("smoke")
  config.data.data_dir = data_dir
  config.data.tokenizer.vocab_size = 256
  config.model.update(num_layers=2, num_heads=4, d_model=32, max_len=32)
  config.batch.update(size=8, seq_len=32)
  config.train.update(total_steps=6, log_every=3, eval_every=0, eval_batches=1, peak_flops=1e12)
  config.checkpoint.update(every=3, async_save=False)
  return common.apply_overrides(config, overrides)


@pytest.fixture
def tiny_config(data_dir):
  return lambda **overrides: tiny_gpt_config(data_dir, **overrides)


def tiny_bert_config(data_dir, corpus, recipe="bert", **overrides):
  """BERT smoke config on a small synthetic corpus."""
  from configs import bert, common

  config = bert.get_config(f"smoke,recipe={recipe}")
  config.data.update(data_dir=data_dir, files=corpus, doc_split="blank_line")
  config.data.tokenizer.vocab_size = 128
  config.model.update(num_layers=2, num_heads=2, d_model=32, max_len=32, dropout=0.0)
  config.batch.update(size=8, seq_len=32)
  config.data.mlm.max_predictions = 5
  config.train.update(total_steps=6, log_every=3, eval_every=0, eval_batches=2, peak_flops=1e12)
  config.checkpoint.update(every=3, async_save=False)
  return common.apply_overrides(config, overrides)


def write_sentence_corpus(path, docs=300, seed=0):
  """Documents of 3-8 sentences where a noun fixes its verb and adjective: context predicts
  masked words, so masked-LM accuracy can rise quickly."""
  import random

  r = random.Random(seed)
  names = ["alice", "bob", "carol", "dave", "erin", "frank"]
  verbs = ["likes", "sees", "paints", "buys", "finds", "wants"]
  adjs = ["green", "red", "small", "big", "old", "new"]
  nouns = ["apples", "boats", "houses", "books", "trees", "cars"]
  out = []
  for _ in range(docs):
    name = r.choice(names).capitalize()
    sents = []
    for _ in range(r.randint(3, 8)):
      i = r.randrange(6)
      sents.append(f"{name} {verbs[i]} {adjs[i]} {nouns[i]}.")
    out.append(" ".join(sents))
  path.write_text("\n\n".join(out))
  return str(path)


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


def pytest_sessionfinish(session):
  """The run's caches go with the run (removed by the process that named them)."""
  import shutil

  if _OWN_CACHE and not hasattr(session.config, "workerinput") and _RUN == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
  if (
    _OWN_PRETRAIN_CACHE and not hasattr(session.config, "workerinput") and _RUN == str(os.getpid())
  ):
    shutil.rmtree(os.environ["PRETRAIN_CACHE_DIR"], ignore_errors=True)
