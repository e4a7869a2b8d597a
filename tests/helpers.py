"""Helpers the tests share, imported by name (`from tests import helpers`); tests/conftest.py
holds the session's set-up and its fixtures. The standard library alone at import."""

import json
import os
import pathlib
import random
import select
import subprocess
import sys
import tempfile
import threading
import time
import types

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The tests compile many small programs and run each for a few steps: LLVM's optimisation of
# the generated CPU code costs more than it saves (about a quarter of the suite's time), and
# XLA:CPU's MLIR fusion emitters take twice as long to compile a train step as its elemental
# emitters (5.9 s against 3.0 s for the tiny GPT's sharded step). Splitting the generated code
# into parts compiled on several threads only adds work when two workers share two cores (7%
# less CPU time without). Every run a test compares with another is compiled the same way
# (subprocesses: xla_flags()).
FAST_COMPILE = (
  "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
  "--xla_cpu_parallel_codegen_split_count=1"
)


def xla_flags(devices):
  """XLA_FLAGS for a test's subprocess with `devices` CPU devices (0: the real one)."""
  count = f"--xla_force_host_platform_device_count={devices} " if devices else ""
  return count + FAST_COMPILE


# Every XLA compilation of this process (recorded by tests/conftest.py), by JAX's monitoring events for a backend compile and
# for a program found in the compilation cache: tests that promise "fails before compiling"
# clear it and check it stays empty (and tests/pretrain/test_errors.py checks that a valid run
# does record one here).
COMPILE_EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/compilation_cache/cache_hits")
COMPILES = []


# The tiny GPT of the tests, as dotted overrides of configs/gpt.py:smoke: it compiles and runs a
# step in well under a second. Subprocesses take it as flags (`flags(TINY_GPT)`).
TINY_GPT = {
  "data.tokenizer.vocab_size": 256,
  "model.num_layers": 2,
  "model.num_heads": 4,
  "model.d_model": 32,
  "model.max_len": 32,
  "batch.size": 8,
  "batch.seq_len": 32,
  "train.total_steps": 6,
  "train.log_every": 3,
  "train.eval_every": 0,
  "train.eval_batches": 1,
  "train.peak_flops": 1e12,
  "checkpoint.every": 3,
  "checkpoint.async_save": False,
}


def flags(overrides):
  """Dotted overrides as command-line flags: ['--config.model.d_model=32', ...]."""
  return [f"--config.{field}={value}" for field, value in overrides.items()]


def tiny_gpt_config(data_dir, **overrides):
  """TINY_GPT's config, with its data in `data_dir` and `overrides` ({'model.d_model': 64})."""
  from configs import common, gpt

  config = gpt.get_config("smoke")
  return common.apply_overrides(config, {**TINY_GPT, "data.data_dir": data_dir, **overrides})


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


class _Driver:
  """tests/entry_points.py, started once per test process: each request forks it, so an entry
  point costs what it does, not an interpreter's start-up and imports."""

  def __init__(self):
    self.proc = subprocess.Popen(
      [sys.executable, "-m", "tests.entry_points"],
      cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO)),
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
    )

  def ask(self, request, timeout=300):
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
    if not ready:  # its late answer would be read as the next request's: a new driver instead
      self.proc.kill()
      self.proc.wait()
    assert ready, (
      f"{request['op']} {request.get('module', request.get('pid'))}: no answer in {timeout} s"
    )
    return json.loads(self.proc.stdout.readline())


_DRIVER = []


def _driver():
  if not _DRIVER or _DRIVER[0].proc.poll() is not None:
    _DRIVER[:] = [_Driver()]
  return _DRIVER[0]


def python_module(module, *args, env, cwd=REPO, timeout=300):
  """`python -m module args` in `cwd` with `env`, to its end, as a forked child of the driver:
  its returncode, stdout and stderr."""
  request = dict(op="run", module=module, args=list(args), cwd=str(cwd), env=dict(env))
  return types.SimpleNamespace(**_driver().ask(request, timeout))


def run_python(cmd, env):
  """`cmd` ([sys.executable, '-m', module, args...]) in the checkout, to its end, its output
  kept (as subprocess.run(..., capture_output=True, text=True) gives it)."""
  assert cmd[:2] == [sys.executable, "-m"], cmd
  return python_module(cmd[2], *cmd[3:], env=env)


class _Started:
  """A module started by the driver (`python -m` in the checkout), with the part of Popen's
  interface the tests use; its output, stdout and stderr together, in the file `output`."""

  def __init__(self, cmd, env, output):
    self.output, self.returncode = output, None
    request = dict(op="start", module=cmd[2], args=cmd[3:], cwd=str(REPO), env=dict(env))
    self.pid = _driver().ask(dict(request, output=str(output)))["pid"]

  def poll(self):
    if self.returncode is None:
      self.returncode = _driver().ask(dict(op="wait", pid=self.pid, block=False))["returncode"]
    return self.returncode

  def wait(self, timeout=300):
    if self.returncode is None:
      answer = _driver().ask(dict(op="wait", pid=self.pid, block=True), timeout)
      self.returncode = answer["returncode"]
    return self.returncode

  def send_signal(self, sig):
    if self.returncode is None:
      os.kill(self.pid, sig)

  def lines(self):
    """Its output's lines as they come, until it has ended (poll or wait said so)."""
    with open(self.output, encoding="utf-8", errors="replace") as f:
      pending = ""
      while True:
        ended = self.returncode is not None
        line = f.readline()
        if line.endswith("\n"):
          yield pending + line
          pending = ""
        elif line:
          pending += line
        elif ended:
          break
        else:
          time.sleep(0.005)
      if pending:
        yield pending


class Running:
  """A subprocess (in the checkout) whose output, stdout and stderr together, is collected
  line by line as it comes, so that a test can act at a moment of its run. `python -m`
  commands start as forked children of the driver (tests/entry_points.py), others as new
  processes."""

  def __init__(self, cmd, env):
    self.output = None
    if cmd[:2] == [sys.executable, "-m"]:
      fd, self.output = tempfile.mkstemp(prefix="running-", suffix=".log")
      os.close(fd)
      self.proc = _Started(cmd, env, self.output)
      source = self.proc.lines()
    else:
      self.proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
      )
      source = self.proc.stdout
    self.lines = []
    self.reader = threading.Thread(target=lambda: self.lines.extend(source), daemon=True)
    self.reader.start()

  def caught(self, predicate, timeout=180):
    """Waits until `predicate()` holds while the process runs; False if it ended first."""
    deadline = time.time() + timeout
    while self.proc.poll() is None:
      if predicate():
        return True
      assert time.time() < deadline, "".join(self.lines)
      time.sleep(0.003)
    return False

  def wait_for(self, prefix, timeout=180):
    """Waits for a line that starts with `prefix`; fails if the process ends first."""
    seen = lambda: any(line.startswith(prefix) for line in self.lines)
    assert self.caught(seen, timeout) or seen(), "".join(self.lines)

  def signal(self, sig):
    self.proc.send_signal(sig)

  def finish(self):
    self.proc.wait(timeout=300)
    self.reader.join()
    if self.output:
      os.remove(self.output)
    return "".join(self.lines)


def processes(cmd, devices_per_process, count=2):
  """`cmd` ([sys.executable, '-m', module, args...]) as `count` jax.distributed processes of
  `devices_per_process` CPU devices each, all running at once, with the settings
  launch.local.process_envs gives each, but forked by the driver: the processes `python -m
  launch.local` would start, without an interpreter's start-up each. Returns their
  `Running`s, in process order."""
  from launch import local

  envs = local.process_envs(count, local.free_port(), devices_per_process=devices_per_process)
  return [Running(cmd, dict(os.environ, **own)) for own in envs]


def finish_all(running):
  """Each process's exit status and output, in order, once all have ended."""
  outs = [r.finish() for r in running]
  return [r.proc.returncode for r in running], outs


# SST-2-like sentences for fine-tuning tests
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank"]
VERBS = ["likes", "sees", "paints", "buys", "finds", "wants"]
ADJS = ["green", "red", "small", "big", "old", "new"]
NOUNS = ["apples", "boats", "houses", "books", "trees", "cars"]


def write_sst(path, n, seed, bad_label=False):
  """SST-2's layout; the label says whether the adjective is one of the first three."""
  r = random.Random(seed)
  with open(path, "w", encoding="utf-8") as f:
    f.write("sentence\tlabel\n")
    for k in range(n):
      i = r.randrange(6)
      label = 2 if bad_label and k == n - 1 else int(i < 3)
      f.write(f"{r.choice(NAMES)} {r.choice(VERBS)} {ADJS[i]} {r.choice(NOUNS)}\t{label}\n")
  return str(path)
