"""One trainer for every objective: set-up, the loop, and what it logs.

Data flow of a step: the loader's host-local numpy batch for step s -> a global jax.Array
(Steps.to_global) -> jit(train_step) with explicit in/out shardings and the state donated ->
metric sums -> periodic log / eval / checkpoint.

The pieces live where other entry points import them: the compiled steps in
pretrain/training/steps.py, the data in pretrain/training/data.py, restore-or-init in pretrain/state/resume.py
(resume order: the latest checkpoint in <workdir>/checkpoints, with everything: params,
optimizer, step, RNG, data position; else config.init_from, parameters only, step 0; else
scratch), the evaluator in pretrain/evaluation/evaluator.py.
"""

import collections
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tokenizers
from flax import nnx
from jax.experimental import multihost_utils

from input_pipeline import batches, tokenizer
from input_pipeline.corpora import sources
from models import layer_stack, layers, model_config
from pretrain.devices import host_memory, sharding
from pretrain.evaluation import evaluator
from pretrain.objectives import registry
from pretrain.state import checkpointer, resume, run_files
from pretrain.state import results as results_lib
from pretrain.training import config_checks, data, durations, goodput, metrics, optimizer
from pretrain.training import steps as steps_lib


class Preemption:
  """SIGTERM (preemption) or SIGINT (Ctrl-C) -> a checkpoint at a step all processes agree on,
  then exit: 0 after SIGTERM, 130 after SIGINT, as shells expect. A second SIGINT aborts at
  once, without saving the step.

  One process: our handler sets a flag the loop reads after each step. Several: JAX's
  preemption service (started by jax.distributed) catches SIGTERM on any process and agrees on
  the step to stop at (multihost_utils.reached_preemption_sync_point) in the background, so
  no step waits on a collective and input loading keeps running ahead of compute; a SIGINT
  is passed on to it as a SIGTERM of this process."""

  def __init__(self):
    self.requested = False
    self.signal = None  # the name of the first signal received
    self.training = False  # set by the loop: a SIGINT before it stops at once
    # jax.distributed.initialize starts JAX's preemption service unless it is configured off
    self.synced = (
      jax.process_count() > 1
      and jax.distributed.is_initialized()
      and jax.config.jax_enable_preemption_service
    )
    self._previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._interrupt)}
    if not self.synced:
      self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    self.signal = self.signal or signal.Signals(signum).name

  def _interrupt(self, signum, frame):
    if not self.training:
      raise KeyboardInterrupt  # before the first step there is nothing to save: stop now
    if self.signal == "SIGINT":
      os.write(
        2,
        b"interrupted again: stopped at once; the current step is not saved (the "
        b"last checkpoint is intact)\n",
      )
      os._exit(EXIT_INTERRUPTED)  # at once: the save in progress, if any, is never committed
    self._handle(signum, frame)
    os.write(
      2,
      b"interrupt: saving a checkpoint after this step (Ctrl-C again stops at once, "
      b"without saving it)\n",
    )  # os.write: safe inside a signal handler
    if self.synced:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption service

  def should_stop(self, step: int) -> bool:
    if self.synced:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def restore(self):
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)


EXIT_INTERRUPTED = 130  # 128 + SIGINT: what shells expect of a program stopped by Ctrl-C


# ----------------------------------------------------------------------------- the loop


@dataclasses.dataclass
class TrainResult:
  step: int  # the step the run reached
  state: Any  # the final train state (None when the run had already finished)
  metrics: dict  # the last logged train metrics, 'eval_<metric>' from the last evaluation
  stopped_by: str | None = None  # 'SIGTERM' or 'SIGINT' when a signal stopped the run

  @property
  def exit_code(self) -> int:
    """What the entry point exits with: 130 after Ctrl-C, else 0."""
    return EXIT_INTERRUPTED if self.stopped_by == "SIGINT" else 0


@dataclasses.dataclass
class Setup:
  """A run's checked config, mesh, objective, data and model: what the loop and the
  evaluation entry point build on."""

  config: Any
  mesh: Any
  rules: list
  objective: Any
  tok: Any
  train_data: Any  # StepIndexed (None when only evaluating)
  val_data: dict  # name -> StepIndexed
  data_notes: list
  model_cfg: Any  # the resolved model section
  total_steps: int
  eval_every: int  # config.train.eval_every, with -1 (each epoch) resolved
  checkpoint_every: int

  @property
  def rows(self):
    """This process's rows of each global batch."""
    local = self.config.batch.size // jax.process_count()
    return np.arange(jax.process_index() * local, (jax.process_index() + 1) * local)

  def build_steps(self):
    batch = (self.train_data or next(iter(self.val_data.values()))).batch(0, self.rows)
    return steps_lib.build_steps(
      self.config,
      self.objective,
      self.model_cfg,
      self.mesh,
      self.rules,
      {k: v.ndim for k, v in batch.items()},
      self.total_steps,
    )

  def evaluator(self, steps, max_batches, progress=False):
    """The evaluator over every dataset's validation split (at most `max_batches` of each)."""
    return evaluator.Evaluator(
      self.objective,
      self.val_data,
      steps,
      token_bytes=tokenizer.token_bytes(self.tok),
      max_batches=max_batches,
      progress=progress,
    )


def setup(
  config: ml_collections.ConfigDict,
  devices: Sequence[jax.Device] | None = None,
  tok: tokenizers.Tokenizer | None = None,
  train: bool = True,
) -> Setup:
  """Validates `config` for `devices` (default: all), builds the mesh and loads the data."""
  devices = jax.devices() if devices is None else list(devices)
  config = run_files.inherit_model(config)
  config_checks.check(config, len(devices), jax.process_count())
  rules = [tuple(r) for r in config.mesh.rules]
  mesh = sharding.make_mesh(config.mesh, devices)
  objective = registry.get(config.objective)
  if tok is None and objective.load_data is not None and config.init_from:
    resume.check_init_from_family(config)  # before its tokenizer is judged
    tok = _init_from_tokenizer(config.init_from)
  tok, train_data, val_data, notes = data.load_data(config, objective, tok, train)
  model_cfg = model_config.resolve(config.model, tok.get_vocab_size())
  n = train_data.num_examples if train_data is not None else None
  return Setup(
    config,
    mesh,
    rules,
    objective,
    tok,
    train_data,
    val_data,
    notes,
    model_cfg,
    durations.total_steps(config, n),
    durations.cadence(config.train.eval_every, config, n),
    durations.cadence(config.checkpoint.every, config, n),
  )


def _init_from_tokenizer(init_from):
  """A fine-tuning run speaks the tokenizer of the checkpoint it starts from."""
  tok = run_files.run_tokenizer(init_from)
  if tok is None:
    raise checkpointer.CheckpointError(
      f"config.init_from: {init_from!r} has no tokenizer.json; give the workdir of a "
      "pretrain.train run or of a pretrain.convert import"
    )
  return tok


def datasets_meta(run: Setup) -> dict | None:
  """Example counts and mixture weights: enough to warn when a resumed run's data changed
  (say, new weights for the next stage of a curriculum)."""
  return {
    "train": run.train_data.num_examples,
    "eval": {name: loader.num_examples for name, loader in run.val_data.items()},
    "weights": {name: w for name, _, w in sources.named(run.config.data)},
  }


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, devices: Sequence[jax.Device] | None = None
) -> TrainResult:
  """Trains `config` in `workdir`, resuming if it holds a checkpoint; returns a TrainResult.

  `devices` restricts the mesh to a subset of the devices (default: all of them). A second
  trainer on the same workdir is refused (run_files.workdir_lock).
  """
  config_checks.check_workdir(workdir)
  preemption = Preemption()  # from the start: a SIGTERM while setting up stops at step one
  try:
    with run_files.workdir_lock(workdir):
      return _train(config, workdir, devices, preemption)
  finally:
    preemption.restore()


def _train(config, workdir, devices, preemption):
  good = goodput.Goodput(workdir, enabled=jax.process_index() == 0)
  run = setup(config, devices)
  tok_id = tokenizer.identity(run.tok)
  start = resume.find_start(run.config, workdir, run.model_cfg, tok_id, datasets_meta(run))
  stop_at = min(run.total_steps, run.config.train.stop_at_step or run.total_steps)
  if start.latest is not None and start.latest >= stop_at:
    return _finished(run, start, workdir)
  if jax.process_index() == 0:
    run_files.write_run_files(workdir, run.config, run.model_cfg, run.tok, run.total_steps)
  steps = run.build_steps()
  start, state = resume.restore_or_init(start, steps, run.objective, run.model_cfg)
  return Loop(run, steps, workdir, start, tok_id, good, preemption).run(state, stop_at)


# Steps dispatched ahead of the device at most: before dispatching step s, the loop waits for
# step s - IN_FLIGHT's output. A signal read after step s then waits for at most IN_FLIGHT
# steps of device time before its save, whatever train.log_every is, while the host still
# prepares the next batch as the device runs (benchmarks/RESULTS.md: no cost to throughput).
IN_FLIGHT = 2


class Loop:
  """The training loop of one run, from its first step to a stop: the end, train.stop_at_step
  or a signal. Logs, evaluates and checkpoints at the config's cadences."""

  def __init__(self, run, steps, workdir, start, tok_id, good, preemption):
    self.setup, self.steps, self.start, self.tok_id = run, steps, start, tok_id
    self.good, self.preemption, self.config = good, preemption, run.config
    self.ckpt, self.last = start.ckpt, {}
    lead = jax.process_index() == 0
    self.evaluate = run.evaluator(steps, self.config.train.eval_batches)
    self.writer = metrics.Writer(
      workdir,
      enabled=lead,
      wandb_config=self.config.wandb,
      run_config=self.config,
      resumed_at=start.latest,
    )
    self.log = TrainLog(run, self.writer, len(run.mesh.devices.flat))
    self.log.header(start.describe(run.total_steps))
    self.results = results_lib.Results(self.config, workdir, start.latest, lead)

  def meta(self, step):
    return run_files.run_meta(
      self.setup.model_cfg,
      self.tok_id,
      step,
      self.config.seed,
      datasets_meta(self.setup),
      optimizer.name(self.config.optimizer),
    )

  def run(self, state, stop_at):
    step = int(state["step"])
    self.good.resumed(step)
    self.good.add("startup", time.perf_counter() - self.good.began)
    first, in_flight = step, collections.deque()  # the first step compiles
    self.preemption.training = True
    try:
      while step < stop_at:
        state, out = self._step(state, step, first)
        in_flight.append(out)
        if len(in_flight) > IN_FLIGHT:
          jax.block_until_ready(in_flight.popleft())
        step += 1
        self.log.add(step, out)
        if not self._after_step(step, state, stop_at):
          break
      if step == self.setup.total_steps:
        self.writer.print(self.results.table())
    finally:
      self._close(step)
    return TrainResult(step, state, self.last, self.preemption.signal)

  def _step(self, state, step, first):
    with self.good.timed("data"):
      batch = self.steps.to_global(self.setup.train_data.batch(step, self.setup.rows))
    if step != first:
      return self.steps.train(state, batch)
    with self.good.timed("compile"):
      if host_memory.configured():
        _bound_host_memory(self.steps.train_temp_bytes(state, batch))
      state, out = self.steps.train(state, batch)
      jax.block_until_ready(out)
    return state, out

  def _after_step(self, step, state, stop_at):
    """Logs, evaluates and checkpoints at their cadences; False when a signal stops the run."""
    config, run = self.config, self.setup
    if durations.every(step, config.train.log_every) or step == stop_at:
      self.last.update(self.log.flush(step, self.ckpt))
      self.good.reached(step, self.last.get("step_time_s", float("nan")))
      self.writer.write(step, self.good.shares(), prefix="goodput/")
      self.good.save()
    if durations.every(step, run.eval_every) or step == run.total_steps:
      self._eval(step, state)
    if self.preemption.should_stop(step):
      self._save(step, state, wait=True)
      how = "interrupted" if self.preemption.signal == "SIGINT" else "preempted"
      self.writer.print(
        f"{how}: saved a checkpoint at step {step}; rerun the same command to resume"
      )
      self.last["preempted_at"] = step
      return False
    if durations.every(step, run.checkpoint_every) or step == stop_at:
      self._save(step, state)
    return True

  def _eval(self, step, state):
    self.log.check_finite(self.ckpt)
    with self.log.paused(), self.good.timed("eval"):
      ev = self.evaluate(state["params"])
      self.results.add(step, self.setup.train_data.epoch_of(step), ev, state, self.meta(step))
    self.log.eval(step, ev)
    self.last.update({f"eval_{k}": v for k, v in ev.items()})

  def _save(self, step, state, wait=False):
    self.log.check_finite(self.ckpt)  # nothing non-finite is ever saved
    with self.good.timed("checkpoint"):
      self.ckpt.save(step, state, self.meta(step), force=True)
      if wait:
        self.ckpt.wait()

  def _close(self, step):
    with self.good.timed("checkpoint"):
      self.start.close()  # waits for the last checkpoint's write, still under the signal handlers
    self.results.close()
    self.good.reached(step, float("nan"))
    self.good.save()
    self.writer.print(self.good.describe())
    self.writer.close()


def _bound_host_memory(temp_bytes):
  """Host memory kept for reuse (pretrain/devices/host_memory.py) unless the step's temporary buffer
  is too large for it on this machine."""
  if host_memory.bound(temp_bytes) and jax.process_index() == 0:
    print(
      f"host memory: the step's {temp_bytes / 2**30:.1f} GiB temporary buffer, kept for "
      "reuse, would take over half of this machine's memory; it is mapped afresh each "
      "step instead (slower, smaller)",
      flush=True,
    )


def _finished(run, start, workdir):
  """A rerun of a finished run (or one stopped at train.stop_at_step): says so, compiles
  nothing, writes nothing."""
  if jax.process_index() == 0:
    reason = "" if start.latest >= run.total_steps else " (config.train.stop_at_step)"
    print(
      f"run finished: step {start.latest} of {run.total_steps} in {workdir}{reason}; nothing to do",
      flush=True,
    )
  start.close()
  return TrainResult(start.latest, None, {})


class TrainLog:
  """Collects the steps' metric sums and writes them out every log_every steps: means over
  the window, norms, lr, throughput and MFU (timed from the end of the first step, which
  includes compilation, and without the time spent evaluating)."""

  def __init__(self, run, writer, num_devices):
    self.run, self.writer, self.config = run, writer, run.config
    self.n_params = layers.count_params(
      lambda: run.objective.make_model(run.model_cfg, nnx.Rngs(0))
    )
    self.tokens_per_step = run.config.batch.size * run.config.batch.seq_len
    self.flops_per_step = (
      run.objective.flops_per_token(run.model_cfg, self.n_params, run.config) * self.tokens_per_step
    )
    self.peak, self.peak_source = metrics.peak_flops(run.config.train.peak_flops)
    self.peak_total = self.peak * num_devices
    self.pending, self.window_start, self.window_steps = [], None, 0
    self.checked = 0  # pending steps already checked for non-finite values
    self.objective_keys = ()  # known once the first window is summarised

  def header(self, how):
    run, cfg = self.run, self.run.model_cfg
    self.writer.print(
      f"model {cfg.size}: {self.n_params / 1e6:.2f}M params (excl. positions), vocab "
      f"{cfg.vocab_size}; mesh {dict(run.mesh.shape)}; {run.total_steps} steps of "
      f"{self.tokens_per_step} tokens; train {run.train_data.num_examples} examples; peak "
      f"{self.peak:.3g} FLOP/s/device ({self.peak_source}); MFU FLOPs/token as in "
      "pretrain/training/metrics.py"
    )
    for note in run.data_notes:
      self.writer.print(note)
    if layer_stack.remat_in_effect(cfg.remat) != cfg.remat:
      self.writer.print(
        f"model.remat: {cfg.remat!r} runs as {layer_stack.remat_in_effect(cfg.remat)!r} "
        f"on {jax.default_backend()} (no host memory to offload to)"
      )
    self.writer.print(how)

  def add(self, step, out):
    self.pending.append((step, out))
    if self.window_start is None:  # the first step includes compilation: time from its end
      self.window_start, self.window_steps = time.perf_counter(), 0
    else:
      self.window_steps += 1

  def check_finite(self, ckpt):
    """With nan_policy 'stop': an error naming the first step since the last check whose loss
    or gradients were not finite, and the checkpoint to resume from."""
    if self.config.train.nan_policy != "stop" or self.checked == len(self.pending):
      return
    flags = jax.device_get([out["nonfinite"] for _, out in self.pending[self.checked :]])
    bad = [step for (step, _), flag in zip(self.pending[self.checked :], flags) if flag]
    self.checked = len(self.pending)
    if bad:
      ckpt.wait()
      latest = ckpt.all_steps(reload=True)
      resume = (
        f"the last checkpoint is step {latest[-1]} in {ckpt.directory}: rerun the same "
        "command to resume from it"
        if latest
        else "no checkpoint was saved yet"
      )
      raise FloatingPointError(
        f"loss or gradients not finite at step {bad[0]}; {resume} (lower "
        "config.optimizer.lr first), or set config.train.nan_policy='skip'"
      )

  @contextlib.contextmanager
  def paused(self):
    """Time spent inside does not count as training time."""
    paused_at = time.perf_counter()
    yield
    if self.window_start is not None:
      self.window_start += time.perf_counter() - paused_at

  def flush(self, step, ckpt):
    if not self.pending:
      return {}
    self.check_finite(ckpt)
    fetched = jax.device_get([out for _, out in self.pending])
    elapsed = time.perf_counter() - self.window_start
    out = _summarise(
      self.run.objective,
      fetched,
      elapsed,
      self.window_steps,
      self.tokens_per_step,
      self.flops_per_step,
      self.peak_total,
      self.config.batch.size,
    )
    self.objective_keys = [
      k for k in self.run.objective.summarize(fetched[-1]) if k not in ("loss", "perplexity")
    ]
    train_data = self.run.train_data
    out["epoch"] = train_data.epoch_of(step)
    if isinstance(train_data, batches.Mixture):
      out.update({f"epoch/{n}": e for n, e in train_data.epochs(step).items()})
    out["tokens_seen"] = steps_lib.rows_seen(self.config.batch, step) * self.config.batch.seq_len
    self.writer.write(step, out, prefix="train/")
    total = self.run.total_steps
    # The objective's own metrics beside the loss (BERT: mlm_loss, mlm_accuracy, nsp_...).
    parts = "".join(f" | {k} {out[k]:.4g}" for k in self.objective_keys)
    self.writer.print(
      f"step {step}/{total} | loss {out['loss']:.4f}{parts} | lr {out['lr']:.2e} | "
      f"gnorm {out['grad_norm']:.3f} | {out['tokens_per_s']:,.0f} tok/s | "
      f"{out['step_time_s'] * 1e3:.1f} ms/step | MFU {100 * out['mfu']:.2f}% | "
      f"ETA {metrics.format_duration((total - step) * out['step_time_s'])}"
    )
    self.pending, self.checked = [], 0
    self.window_start, self.window_steps = time.perf_counter(), 0
    return out

  def eval(self, step, ev):
    self.writer.write(step, ev, prefix="eval/")
    self.writer.print(f"step {step}/{self.run.total_steps} | eval " + metrics.format_metrics(ev))


def _summarise(
  objective, fetched, elapsed, steps, tokens_per_step, flops_per_step, peak_total, batch_size
):
  """Means over the logged window (sums added, then divided); timing over its steps after the
  first, which includes compilation. During a batch-size ramp, throughput and MFU count the
  rows trained on, and 'batch_size' is their mean."""
  totals = {k: sum(f[k] for f in fetched) for k in fetched[-1]}
  step_time = elapsed / steps if steps else float("nan")
  ramp = {}
  if "batch_rows" in totals:
    share = float(totals["batch_rows"]) / (len(fetched) * batch_size)
    tokens_per_step, flops_per_step = tokens_per_step * share, flops_per_step * share
    ramp = {"batch_size": share * batch_size}
  return dict(
    objective.summarize(totals),
    **ramp,
    grad_norm=float(fetched[-1]["grad_norm"]),
    param_norm=float(fetched[-1]["param_norm"]),
    update_norm=float(fetched[-1]["update_norm"]),
    lr=float(fetched[-1]["lr"]),
    skipped=int(totals["nonfinite"]),
    step_time_s=step_time,
    tokens_per_s=tokens_per_step / step_time,
    mfu=flops_per_step / step_time / peak_total,
  )
