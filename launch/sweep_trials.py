"""A sweep's trials: the worker that takes them from the Optuna study and runs each as a
`pretrain.train` subprocess (launch/sweep.py is the command line).

Each trial runs in its own workdir, <sweepdir>/trials/<n>, with the devices of its local slot.
While it runs, the worker reports every evaluation the trainer writes to results.json to the
study, and stops the trial with SIGTERM (it checkpoints) when the pruner says so or when the
worker itself is stopped; a trial stopped before its end is queued again, and its next attempt
resumes the same workdir.
"""

import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

from launch import slurm
from pretrain.ground import storage
from pretrain.state import results

TRIAL_COMMAND = ["-m", "pretrain.train"]


def override_args(overrides):
  """--config.<field>=<value> arguments (floats in full precision)."""
  return [
    f"--config.{k}={v!r}" if isinstance(v, float) else f"--config.{k}={v}"
    for k, v in overrides.items()
  ]


def trial_slots(parallel, gpus=0, tpu_chips=0, cpus=0):
  """Per local slot: the environment and CPU cores its trials run with."""
  cores = sorted(os.sched_getaffinity(0))
  cpus = cpus or max(1, len(cores) // parallel)
  slots = []
  for k in range(parallel):
    env = {}
    if gpus:
      env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in range(k * gpus, (k + 1) * gpus))
    if tpu_chips:
      bounds = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1"}[tpu_chips]
      env.update(
        TPU_VISIBLE_CHIPS=",".join(str(c) for c in range(k * tpu_chips, (k + 1) * tpu_chips)),
        TPU_CHIPS_PER_PROCESS_BOUNDS=bounds,
        TPU_PROCESS_BOUNDS="1,1,1",
        TPU_PROCESS_PORT=str(8476 + k),
      )
    mine = cores[k * cpus : (k + 1) * cpus] if (k + 1) * cpus <= len(cores) else cores
    slots.append((env, mine))
  return slots


def trial_command(spec, overrides, workdir, processes=1, launcher="local"):
  """A trial's argv: the training command; with several processes, through our launchers
  (launch.local on this machine, or srun across the nodes of a SLURM worker's allocation)."""
  train = [
    sys.executable,
    *TRIAL_COMMAND,
    f"--config={spec['config']}",
    *spec["overrides"],
    *spec["objective_overrides"],
    *override_args(overrides),
    f"--workdir={workdir}",
  ]
  if processes == 1:
    return train
  if launcher == "srun":
    return slurm.srun(train)
  return [sys.executable, "-m", "launch.local", f"--num_processes={processes}", "--"] + train


def _child_setup(cores):
  """In the trial's process before exec: pinned to its cores, and SIGTERMed (checkpointing)
  if this worker dies, so no orphan trains on while its trial is queued again."""

  def setup():
    if cores:
      os.sched_setaffinity(0, cores)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

  return setup


def total_steps(workdir):
  try:
    return json.loads(storage.read_text(os.path.join(workdir, "config.json")))["train"][
      "total_steps"
    ]
  except (OSError, ValueError, KeyError):
    return None


def trials_dir(spec, sweepdir):
  """Where the trials' workdirs go: --trials_dir (a local directory or a bucket), by default
  <sweepdir>/trials."""
  return spec.get("trials_dir") or os.path.join(sweepdir, "trials")


def log_tail(path, lines=15):
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return "".join(f.readlines()[-lines:])
  except OSError:
    return ""


class TrialFailed(Exception):
  pass


class Requeued(Exception):
  """The trial stopped with a checkpoint before its end (this worker is stopping)."""


class Surplus(Exception):
  """A trial beyond the sweep's budget (another worker took the last one at the same time)."""


class Worker:
  """Runs the study's trials in `slots` threads until none is left to start (and, unless
  `leave_early`, until no trial is running anywhere, so that stale ones are taken over)."""

  def __init__(
    self,
    spec,
    sweep,
    study,
    sweepdir,
    slots,
    poll,
    max_retry,
    leave_early=False,
    launch=(1, "local"),
    out=print,
  ):
    self.spec, self.sweep, self.study, self.sweepdir = spec, sweep, study, sweepdir
    self.slots, self.poll, self.max_retry, self.leave_early = slots, poll, max_retry, leave_early
    self.launch, self.out = launch, out  # (processes per trial, launcher)
    self.stopping = threading.Event()
    self.lock = threading.Lock()
    self.name = f"{socket.gethostname()}:{os.getpid()}"

  # -- the budget

  def _trials(self):
    return self.study.get_trials(deepcopy=False)

  @staticmethod
  def is_fresh(t):
    return "failed_trial" not in t.system_attrs and not t.user_attrs.get("surplus")

  def _budget_left(self):
    import optuna

    trials = self._trials()
    waiting = any(t.state == optuna.trial.TrialState.WAITING for t in trials)
    return waiting or sum(map(self.is_fresh, trials)) < self.sweep.trials

  def _unfinished(self):
    return any(not t.state.is_finished() for t in self._trials())

  def _is_surplus(self, number):
    """A fresh trial past the budget, or a grid point another trial already holds."""
    trials = self._trials()
    me = next(t for t in trials if t.number == number)
    if not self.is_fresh(me):
      return False
    earlier = [t for t in trials if t.number < number and self.is_fresh(t)]
    if len(earlier) >= self.sweep.trials:
      return True
    grid_id = me.system_attrs.get("grid_id")
    return grid_id is not None and any(
      t.system_attrs.get("grid_id") == grid_id
      and t.number != number
      and t.state.name != "FAIL"
      and (t.number < number or t.state.is_finished())
      for t in trials
    )

  def _index(self, frozen):
    """The sweep's own number of a trial: 0, 1, ... in the order fresh trials started (a
    trial queued again keeps its number, and its workdir)."""
    if "trial" in frozen.user_attrs:
      return frozen.user_attrs["trial"]
    return sum(1 for t in self._trials() if t.number < frozen.number and self.is_fresh(t))

  # -- the loop

  def run(self):
    threads = [
      threading.Thread(target=self._work, args=(slot,), daemon=True) for slot in self.slots
    ]
    for t in threads:
      t.start()
    for t in threads:
      while t.is_alive():
        t.join(0.5)

  def stop(self, *_):
    if not self.stopping.is_set():
      self.out(
        "stopping: running trials checkpoint and are queued again; rerun the same "
        "command to continue"
      )
    self.stopping.set()

  def _work(self, slot):
    import optuna

    while not self.stopping.is_set():
      with self.lock:
        optuna.storages.fail_stale_trials(self.study)
        has_work = self._budget_left()
      if not has_work:
        if self.leave_early or not self._unfinished():
          return
        self.stopping.wait(self.poll)
        continue
      self.study.optimize(
        lambda trial: self._objective(trial, slot),
        n_trials=1,
        catch=(TrialFailed, Requeued, Surplus),
        callbacks=[self._after],
      )

  def _after(self, study, frozen):
    """Queues a stopped trial again at once (a stale one is queued by Optuna's callback)."""
    if frozen.user_attrs.get("requeue"):
      import optuna

      optuna.storages.RetryHeartbeatStaleTrialCallback(self.max_retry)(study, frozen)

  def _overrides(self, trial):
    if "overrides" in trial.user_attrs:  # a trial queued again: exactly what it ran with
      return dict(trial.user_attrs["overrides"])
    if self.sweep.suggest is not None:
      return dict(self.sweep.suggest(trial))
    out = {}
    for field, r in self.sweep.space.items():
      if self.sweep.sampler == "grid":
        out[field] = trial.suggest_categorical(field, r)
      elif r.kind == "choice":
        out[field] = trial.suggest_categorical(field, list(r.values))
      elif r.kind == "int":
        out[field] = trial.suggest_int(field, int(r.low), int(r.high), log=r.log)
      else:
        out[field] = trial.suggest_float(field, r.low, r.high, log=r.log)
    return out

  def _objective(self, trial, slot):
    with self.lock:
      if self._is_surplus(trial.number):
        trial.set_user_attr("surplus", True)
        raise Surplus()
    frozen = next(t for t in self._trials() if t.number == trial.number)
    number = self._index(frozen)
    overrides = self._overrides(trial)
    # The run's workdir (in --trials_dir, which may be a bucket), and a local directory in the
    # sweepdir for the trial's record and log (the same one by default).
    workdir = os.path.join(trials_dir(self.spec, self.sweepdir), str(number))
    local = os.path.join(self.sweepdir, "trials", str(number))
    log_path = os.path.join(local, "train.log")
    command = trial_command(self.spec, overrides, workdir, *self.launch)
    os.makedirs(local, exist_ok=True)
    for key, value in dict(
      trial=number,
      overrides=overrides,
      command=command,
      workdir=workdir,
      log=log_path,
      worker=self.name,
      requeue=False,
    ).items():
      trial.set_user_attr(key, value)  # (an attempt's own)
    with open(os.path.join(local, "trial.json"), "w", encoding="utf-8") as f:
      json.dump(
        dict(trial=number, optuna_trial=trial.number, overrides=overrides, command=command),
        f,
        indent=1,
      )
    resumed = " (resuming its checkpoints)" if not self.is_fresh(frozen) else ""
    self.out(
      f"trial {number} started{resumed}: "
      f"{' '.join(override_args(overrides)) or '(no overrides)'} -> {workdir}"
    )
    env, cores = slot
    env = dict(env, WANDB_RUN_GROUP=self.spec["study"], WANDB_NAME=f"trial-{number}")
    started, base = time.time(), frozen.user_attrs.get("wall_s", 0.0)
    with open(log_path, "a", encoding="utf-8") as log:
      log.write(f"$ {shlex.join(command)}\n")
      log.flush()
      proc = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, **env),
        preexec_fn=_child_setup(cores),
        start_new_session=True,
      )
      pruned_at = self._follow(trial, proc, workdir, started, base)
    trial.set_user_attr("wall_s", base + time.time() - started)
    history = results.read_history(workdir)
    self._record(trial, history)
    return self._outcome(trial, number, proc, history, pruned_at, log_path, workdir,
                         base + time.time() - started)  # fmt: skip

  def _outcome(self, trial, number, proc, history, pruned_at, log_path, workdir, wall_s):
    """The trial's value; or pruned, queued again (stopped before its end) or failed."""
    import optuna  # the optional sweep extra

    if pruned_at is not None:
      self.out(f"trial {number} pruned at step {pruned_at}")
      raise optuna.TrialPruned(f"pruned at step {pruned_at}")
    tail = log_tail(log_path)
    done = history and history[-1]["step"] == total_steps(workdir)
    if self.stopping.is_set() or (not proc.returncode and not done):
      trial.set_user_attr("requeue", True)
      self.out(
        f"trial {number} stopped at step {history[-1]['step'] if history else 0}; "
        "queued again, to resume from its checkpoint"
      )
      raise Requeued()
    if proc.returncode:
      trial.set_user_attr("log_tail", tail)
      self.out(
        f"trial {number} failed (exit {proc.returncode}); the end of its log ({log_path}):\n{tail}"
      )
      raise TrialFailed(f"exit {proc.returncode}")
    value = trial.user_attrs["best"] if "best" in trial.user_attrs else None
    if value is None:
      raise TrialFailed(f"no evaluation of {self.sweep.metric}")
    self.out(
      f"trial {number} finished: {self.sweep.metric} {value:.4g} (best; final "
      f"{history[-1][self.sweep.metric]:.4g} at step {history[-1]['step']}) in "
      f"{wall_s:.0f} s"
    )
    return value

  def _follow(self, trial, proc, workdir, started, base):
    """Reports each new evaluation to the study while the trial runs; SIGTERMs it when the
    pruner says so or this worker stops. Returns the step it was pruned at, or None."""
    reported, pruned_at = set(), None
    while proc.poll() is None:
      try:
        proc.wait(self.poll)
      except subprocess.TimeoutExpired:
        pass
      if self.stopping.is_set():
        proc.send_signal(signal.SIGTERM)
        continue
      new = [
        r
        for r in results.read_history(workdir)
        if r["step"] not in reported and self.sweep.metric in r
      ]
      for row in new:
        reported.add(row["step"])
        trial.report(row[self.sweep.metric], row["step"])
      if new:
        trial.set_user_attr("wall_s", base + time.time() - started)
      if new and pruned_at is None and proc.poll() is None and trial.should_prune():
        pruned_at = new[-1]["step"]
        proc.send_signal(signal.SIGTERM)
    return pruned_at

  def _record(self, trial, history):
    rows = [r for r in history if self.sweep.metric in r]
    if not rows:
      return
    pick = min if self.sweep.mode == "min" else max
    trial.set_user_attr("steps", rows[-1]["step"])
    trial.set_user_attr("final", rows[-1][self.sweep.metric])
    trial.set_user_attr("best", pick(r[self.sweep.metric] for r in rows))


def records(study):
  """One record per trial of the sweep (a trial queued again counts once: its latest attempt)."""
  latest = {}
  for t in study.get_trials(deepcopy=False):
    if "trial" in t.user_attrs and not t.user_attrs.get("surplus"):  # (it started)
      latest[t.user_attrs["trial"]] = t
  out = []
  for number, t in sorted(latest.items()):
    a = t.user_attrs
    out.append(
      dict(
        trial=number,
        state=t.state.name,
        overrides=a.get("overrides", t.params),
        steps=a.get("steps"),
        final=a.get("final"),
        best=a.get("best"),
        wall_s=a.get("wall_s"),
        workdir=a.get("workdir", ""),
        log=a.get("log", os.path.join(a.get("workdir", ""), "train.log")),
        command=a.get("command", []),
        log_tail=a.get("log_tail", ""),
      )
    )
  return out
