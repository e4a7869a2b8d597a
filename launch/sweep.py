r"""Hyperparameter sweeps: trials of `pretrain.train`, bookkept in an Optuna study.

  python -m launch.sweep --config=configs/gpt.py:smoke --sweep=lr --sweepdir=runs/sweeps/lr --parallel=2
  python -m launch.sweep --config=configs/gpt.py:nano --sweep=tpe --sweepdir=runs/sweeps/tpe --trials=32
  python -m launch.sweep ... --executor=slurm --workers=16 --dry_run   # an sbatch array of workers
  python -m launch.sweep ... --storage=postgresql://host/db --worker   # one more worker, anywhere
  python -m launch.sweep --sweepdir=runs/sweeps/lr --report                 # table, plot, best command

The sweep is a function `sweep_<name>()` beside `get_config` in the config file
(configs/sweeps.py says how to write one). `--config.<field>=<value>` overrides apply to every
trial. Each trial is the ordinary training command, `python -m pretrain.train
--config=<file:arg> <overrides> <trial's overrides> --workdir=<sweepdir>/trials/<n>`, started
as a subprocess with an argument list and its log in <sweepdir>/trials/<n>/train.log; its
evaluations reach the study as the trainer writes them (results.json), so an Optuna pruner can
stop it (SIGTERM: it checkpoints and exits). --trials_dir=gs://BUCKET/path puts the trials'
workdirs (checkpoints, metrics, results) in a bucket instead; the study, logs and report stay
in the sweepdir.

The study is the bookkeeping: Optuna's RDB storage, by default a SQLite file in the sweepdir
(--storage=postgresql://... or mysql://... for many machines). Any number of workers on any
machines take trials from it; Optuna hands each trial to one worker only. Workers record a
heartbeat: the trial of a worker that died (kill -9, a lost node) goes stale and is queued
again, and whoever runs it resumes its workdir's checkpoints. A worker that is stopped (SIGTERM,
Ctrl-C) stops its trials with a checkpoint and queues them again at once. Rerunning the sweep
command skips finished trials. A failed trial is reported with the end of its log; the sweep
goes on.

Executors: local (--parallel trials at a time, each on its own GPUs, TPU chips or CPU cores),
slurm (an sbatch array whose tasks are `--worker`s; --dry_run prints it), and `--worker`, which
any other launcher (a TPU VM, a GKE Job) can start. A trial of several processes is started
through our launchers: launch.local (--processes_per_trial=N) or, on SLURM, srun over the
nodes of a worker's allocation (--nodes_per_worker=N).
"""

import copy
import dataclasses
import fcntl
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from configs import sweeps
from launch import sweep_report, sweep_trials
from pretrain.ground import errors, storage

FLAGS = flags.FLAGS


class SweepError(errors.UserError):
  """A bad sweep, sweepdir or flag; reported as one line before any trial starts."""


def define_flags():
  """Command-line flags, defined only when this module is the program."""
  config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py:arg).", lock_config=True
  )
  flags.DEFINE_string("sweep", None, "The sweep: a function sweep_<name>() of the config file.")
  flags.DEFINE_string("sweepdir", None, "Directory of the sweep: study, trials, report.")
  flags.DEFINE_string("storage", "", "Optuna RDB storage URL (default: SQLite in the sweepdir).")
  flags.DEFINE_string(
    "trials_dir",
    "",
    "Where the trials' workdirs go (default: <sweepdir>/trials); "
    "may be a bucket, gs://BUCKET/path (logs stay in the sweepdir).",
  )
  flags.DEFINE_integer(
    "trials", 0, "Random/adaptive sweeps: how many trials (default: the sweep's)."
  )
  flags.DEFINE_integer("parallel", 1, "Local: trials run at a time by this worker.")
  flags.DEFINE_enum("executor", "local", ["local", "slurm"], "Where the workers run.")
  flags.DEFINE_bool("worker", False, "Run trials until none is left to start; no report.")
  flags.DEFINE_bool("report", False, "Only write and print the report of --sweepdir.")
  flags.DEFINE_bool("dry_run", False, "Print the trials' commands (slurm: the sbatch script).")
  flags.DEFINE_integer(
    "gpus_per_trial", 0, "Local: GPUs given to each trial (CUDA_VISIBLE_DEVICES)."
  )
  flags.DEFINE_integer(
    "tpu_chips_per_trial", 0, "Local: TPU chips given to each trial (1, 2 or 4)."
  )
  flags.DEFINE_integer(
    "cpus_per_trial", 0, "Local: CPU cores pinned per trial (0: cores // parallel)."
  )
  flags.DEFINE_integer(
    "processes_per_trial", 1, "Processes (hosts) per trial, started by --trial_launcher."
  )
  flags.DEFINE_enum(
    "trial_launcher",
    "local",
    ["local", "srun"],
    "How a trial of several processes starts: launch.local on this machine, or srun (slurm).",
  )
  flags.DEFINE_integer(
    "heartbeat",
    60,
    "Seconds between a running trial's heartbeats; a trial "
    "silent for twice as long is stale and queued again.",
  )
  flags.DEFINE_integer("max_retry", 3, "Times a stale (or stopped) trial is queued again.")
  flags.DEFINE_float("poll", 2.0, "Seconds between looks at a running trial's evaluations.")
  # slurm
  flags.DEFINE_integer("workers", 1, "Slurm: array tasks, each one worker.")
  flags.DEFINE_integer("gpus_per_worker", 1, "Slurm: GPUs per worker.")
  flags.DEFINE_integer("cpus_per_worker", 8, "Slurm: CPU cores per worker.")
  flags.DEFINE_integer("nodes_per_worker", 1, "Slurm: nodes per worker (multi-host trials, srun).")
  flags.DEFINE_string("time", "24:00:00", "Slurm: wall-clock limit of each worker.")
  flags.DEFINE_string("partition", "", "Slurm: partition (default: the cluster's).")
  flags.DEFINE_string("setup", "", "Slurm: shell lines run first (e.g. module load).")


# ----------------------------------------------------------------------------- the sweep's spec


def load_sweep(config_file, name):
  """The Sweep of `sweep_<name>()` in the config file."""
  where = importlib.util.spec_from_file_location("sweep_config", config_file)
  module = importlib.util.module_from_spec(where)
  where.loader.exec_module(module)
  defined = sorted(n[len("sweep_") :] for n in dir(module) if n.startswith("sweep_"))
  if not name or name not in defined:
    raise SweepError(
      f"--sweep: {name!r} is not defined in {config_file}; it defines "
      f"{', '.join(defined) or 'no sweep (add a function sweep_<name>())'}"
    )
  sweep = getattr(module, "sweep_" + name)()
  if not isinstance(sweep, sweeps.Sweep):
    raise SweepError(f"{config_file}: sweep_{name}() must return a configs.sweeps.Sweep")
  return sweep


def resolve(sweep, config, trials=0):
  """The sweep with its metric, mode and trial count filled in; checked against `config`."""
  if sweep.sampler == "grid":
    empty = [k for k, v in sweep.space.items() if not v]
    if not sweep.space or empty:
      raise SweepError(
        f"--sweep: the grid is empty ({', '.join(empty) or 'no fields'} has no "
        "values); give every field a list of values"
      )
    if trials:
      raise SweepError("--trials: a grid runs every point of its product; drop --trials")
  if sweep.pruner not in sweeps.PRUNERS:
    raise SweepError(f"sweep pruner {sweep.pruner!r}; use one of {', '.join(sweeps.PRUNERS)}")
  sweep = dataclasses.replace(
    sweep,
    metric=sweep.metric or config.train.best_metric,
    mode=sweep.mode or config.train.best_mode,
    trials=trials or sweep.trials,
  )
  if sweep.mode not in ("min", "max"):
    raise SweepError(f"sweep mode {sweep.mode!r}; use 'min' or 'max'")
  if sweep.trials < 1:
    raise SweepError("--trials: give at least one trial")
  for overrides in _sample_overrides(sweep):
    check_overrides(config, overrides)
  return sweep


def _sample_overrides(sweep):
  """Overrides to check before any trial: every grid point; the ends of each range; one call
  of a define-by-run suggest on a throwaway study."""
  if sweep.sampler == "grid":
    return sweep.points()
  if sweep.suggest is not None:
    import optuna

    return [sweep.suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask())]
  ends = {}
  for field, r in sweep.space.items():
    ends[field] = list(r.values) if r.kind == "choice" else [r.low, r.high]
  return [{f: v[0] for f, v in ends.items()}, {f: v[-1] for f, v in ends.items()}]


def check_overrides(config, overrides):
  """A swept field the config lacks, or a value of the wrong type, is an error now."""
  trial = copy.deepcopy(config)
  trial.unlock()
  for field, value in overrides.items():
    node, *path = [trial] + field.split(".")
    try:
      for part in path[:-1]:
        node = node[part]
      if path[-1] not in node:
        raise KeyError(path[-1])
      node[path[-1]] = value
    except (KeyError, AttributeError, TypeError) as e:
      why = "the config has no such field" if isinstance(e, (KeyError, AttributeError)) else e
      raise SweepError(
        f"sweep field {field} = {value!r}: {why}; sweep fields of the config (e.g. optimizer.lr)"
      ) from None


# ----------------------------------------------------------------------------- the study


class Spec(dict):
  """<sweepdir>/sweep.json: what the sweep is (config, sweep name, overrides, storage), so
  that reruns, workers and --report find it and a different sweep is refused."""

  IDENTITY = ("config", "config_path", "sweep", "overrides")

  @classmethod
  def path(cls, sweepdir):
    return os.path.join(sweepdir, "sweep.json")

  @classmethod
  def read(cls, sweepdir):
    if not os.path.exists(cls.path(sweepdir)):
      raise SweepError(
        f"--sweepdir: {sweepdir} holds no sweep (no sweep.json); start one there "
        "with --config and --sweep"
      )
    with open(cls.path(sweepdir), encoding="utf-8") as f:
      return cls(json.load(f))

  def check_same(self, sweepdir):
    """Refuses a sweepdir that holds a different sweep."""
    if not os.path.exists(self.path(sweepdir)):
      return
    found = self.read(sweepdir)
    if any(found[k] != self[k] for k in self.IDENTITY):
      raise SweepError(
        f"--sweepdir: {sweepdir} holds sweep {found['sweep']!r} of {found['config']} "
        f"{' '.join(found['overrides'])}".rstrip()
        + "; give another --sweepdir, or rerun "
        "that sweep's command to continue it"
      )

  def check_trials_dir(self, sweepdir):
    """The trials_dir of the sweep in `sweepdir` (a rerun need not repeat it; another one is
    refused: the trials there would start afresh)."""
    found = self.read(sweepdir).get("trials_dir", "")
    if self["trials_dir"] and self["trials_dir"] != found:
      raise SweepError(
        f"--trials_dir: the sweep in {sweepdir} keeps its trials in "
        f"{found or os.path.join(sweepdir, 'trials')}; drop --trials_dir or give that"
      )
    return found

  def write(self, sweepdir):
    tmp = self.path(sweepdir) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self, f, indent=1)
    os.replace(tmp, self.path(sweepdir))


class sweepdir_lock:
  """An exclusive lock on <sweepdir>/sweep.lock: workers started together create the study once."""

  def __init__(self, sweepdir):
    self.path = os.path.join(sweepdir, "sweep.lock")

  def __enter__(self):
    self.file = open(self.path, "a", encoding="utf-8")
    fcntl.flock(self.file, fcntl.LOCK_EX)

  def __exit__(self, *exc):
    fcntl.flock(self.file, fcntl.LOCK_UN)
    self.file.close()


def rdb_storage(url, heartbeat, max_retry):
  import optuna

  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
  return optuna.storages.RDBStorage(
    url,
    engine_kwargs=engine,
    heartbeat_interval=heartbeat,
    grace_period=2 * heartbeat,
    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry),
  )


def sampler(sweep, seed):
  import optuna

  if sweep.sampler == "grid":
    return optuna.samplers.GridSampler(sweep.space, seed=sweep.seed)
  if sweep.sampler == "random":
    return optuna.samplers.RandomSampler(seed=seed)
  # constant_liar: parallel trials are not all drawn near the same point
  return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner(sweep):
  import optuna

  return {
    "none": optuna.pruners.NopPruner(),
    "median": optuna.pruners.MedianPruner(n_startup_trials=2),
    "halving": optuna.pruners.SuccessiveHalvingPruner(),
  }[sweep.pruner]


def open_study(spec, sweep, sweepdir, heartbeat, max_retry):
  """Creates or loads the study (under the sweepdir's lock). Each opening gets its own seed
  for random and TPE sampling: the first the sweep's, so that two workers never draw alike."""
  import optuna

  optuna.logging.set_verbosity(optuna.logging.ERROR)  # we say what happens
  with sweepdir_lock(sweepdir):
    spec.check_same(sweepdir)
    spec.write(sweepdir)
    study = optuna.create_study(
      storage=rdb_storage(spec["storage"], heartbeat, max_retry),
      study_name=spec["study"],
      direction="minimize" if sweep.mode == "min" else "maximize",
      load_if_exists=True,
    )
    openings = study.user_attrs.get("openings", 0)
    study.set_user_attr("openings", openings + 1)
  study.sampler = sampler(sweep, sweep.seed + 1_000_003 * openings)
  study.pruner = pruner(sweep)
  return study


# ----------------------------------------------------------------------------- report


def report(spec, sweepdir):
  """Writes the report files and returns the text to print."""
  import optuna

  optuna.logging.set_verbosity(optuna.logging.ERROR)  # we say what happens
  study = optuna.load_study(study_name=spec["study"], storage=spec["storage"])
  return sweep_report.write_report(
    sweep_trials.records(study),
    spec["metric"],
    spec["mode"],
    sweepdir,
    sweep_trials.trials_dir(spec, sweepdir),
  )


# ----------------------------------------------------------------------------- slurm


def slurm_script(
  spec, sweepdir, worker_args, workers, gpus, cpus, nodes, time_limit, partition, setup
):
  """An sbatch array job: each task is one `--worker` on the shared study."""
  logs = os.path.join(sweepdir, "slurm")
  lines = [
    "#!/bin/bash",
    f"#SBATCH --job-name=sweep-{spec['sweep']}",
    f"#SBATCH --array=0-{workers - 1}",
    f"#SBATCH --nodes={nodes}",
    "#SBATCH --ntasks-per-node=1",
    f"#SBATCH --cpus-per-task={cpus}",
    f"#SBATCH --time={time_limit}",
    f"#SBATCH --output={logs}/%x-%A_%a.out",
    # before the time limit the worker gets SIGTERM: its trial checkpoints and is queued
    "#SBATCH --signal=B:TERM@120",
  ]
  if gpus:
    lines.insert(5, f"#SBATCH --gpus-per-node={gpus}")
  if partition:
    lines.append(f"#SBATCH --partition={partition}")
  lines += ["set -euo pipefail"] + ([setup] if setup else []) + [f"cd {shlex.quote(spec['cwd'])}"]
  lines.append("exec " + shlex.join([sys.executable, "-m", "launch.sweep", *worker_args]))
  return "\n".join(lines) + "\n"


def worker_args(spec, sweepdir, trials, heartbeat, max_retry, nodes):
  args = [
    f"--config={spec['config']}",
    f"--sweep={spec['sweep']}",
    f"--sweepdir={os.path.abspath(sweepdir)}",
    f"--storage={spec['storage']}",
    *spec["overrides"],
    "--worker",
    f"--heartbeat={heartbeat}",
    f"--max_retry={max_retry}",
  ]
  if trials:
    args.append(f"--trials={trials}")
  if spec.get("trials_dir"):
    args.append(f"--trials_dir={spec['trials_dir']}")
  if nodes > 1:  # each trial: one process on every node of the worker's allocation
    args += [f"--processes_per_trial={nodes}", "--trial_launcher=srun"]
  return args


# ----------------------------------------------------------------------------- main


def make_spec(config, sweep, sweepdir, storage_url, argv):
  config_file = config_flags.get_config_filename(FLAGS["config"]).split(":", 1)[0]
  config_given = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
  objective = []
  if sweep.metric != config.train.best_metric or sweep.mode != config.train.best_mode:
    objective = [
      f"--config.train.best_metric={sweep.metric}",
      f"--config.train.best_mode={sweep.mode}",
    ]
  return Spec(
    config=config_given,
    config_path=os.path.abspath(config_file),
    sweep=FLAGS.sweep,
    overrides=[a for a in argv if a.startswith("--config.")],
    objective_overrides=objective,
    sampler=sweep.sampler,
    trials=sweep.trials,
    fields=sweep.fields(),
    metric=sweep.metric,
    mode=sweep.mode,
    pruner=sweep.pruner,
    storage=storage_url or "sqlite:///" + os.path.abspath(os.path.join(sweepdir, "study.db")),
    study=FLAGS.sweep,
    cwd=os.getcwd(),
    trials_dir=storage.absolute(FLAGS.trials_dir) if FLAGS.trials_dir else "",
  )


def prepare(argv):
  """Checks everything a sweep needs before any trial starts; returns (spec, sweep)."""
  if FLAGS.config is None or not FLAGS.sweep:
    raise SweepError("give --config=configs/<file>.py:<arg> and --sweep=<name> (or --report)")
  config_file = config_flags.get_config_filename(FLAGS["config"]).split(":", 1)[0]
  sweep = resolve(load_sweep(config_file, FLAGS.sweep), FLAGS.config, FLAGS.trials)
  if FLAGS.parallel < 1:
    raise SweepError("--parallel: give at least 1")
  if FLAGS.tpu_chips_per_trial not in (0, 1, 2, 4):
    raise SweepError("--tpu_chips_per_trial: 1, 2 or 4")
  spec = make_spec(FLAGS.config, sweep, FLAGS.sweepdir, FLAGS.storage, argv)
  if os.path.exists(Spec.path(FLAGS.sweepdir)):
    spec.check_same(FLAGS.sweepdir)
    spec["trials_dir"] = spec.check_trials_dir(FLAGS.sweepdir)
  storage.check(spec["trials_dir"], "--trials_dir")
  return spec, sweep


def run_local(spec, sweep):
  slots = sweep_trials.trial_slots(
    FLAGS.parallel, FLAGS.gpus_per_trial, FLAGS.tpu_chips_per_trial, FLAGS.cpus_per_trial
  )
  if FLAGS.dry_run:  # the trials' commands (a random or adaptive sweep: one example)
    for k, point in enumerate(
      sweep.points() if sweep.sampler == "grid" else _sample_overrides(sweep)[:1]
    ):
      workdir = os.path.join(sweep_trials.trials_dir(spec, FLAGS.sweepdir), str(k))
      env = slots[k % len(slots)][0]
      print(
        "".join(f"{name}={shlex.quote(value)} " for name, value in env.items())
        + shlex.join(
          sweep_trials.trial_command(
            spec, point, workdir, FLAGS.processes_per_trial, FLAGS.trial_launcher
          )
        )
      )
    return
  os.makedirs(FLAGS.sweepdir, exist_ok=True)
  study = open_study(spec, sweep, FLAGS.sweepdir, FLAGS.heartbeat, FLAGS.max_retry)
  worker = sweep_trials.Worker(
    spec,
    sweep,
    study,
    FLAGS.sweepdir,
    slots,
    FLAGS.poll,
    FLAGS.max_retry,
    leave_early=FLAGS.worker,
    launch=(FLAGS.processes_per_trial, FLAGS.trial_launcher),
    out=lambda line: print(line, flush=True),
  )
  previous = {s: signal.signal(s, worker.stop) for s in (signal.SIGTERM, signal.SIGINT)}
  try:
    worker.run()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if not FLAGS.worker:
    print(report(spec, FLAGS.sweepdir), flush=True)


def run_slurm(spec, sweep):
  args = worker_args(
    spec, FLAGS.sweepdir, FLAGS.trials, FLAGS.heartbeat, FLAGS.max_retry, FLAGS.nodes_per_worker
  )
  text = slurm_script(
    spec,
    FLAGS.sweepdir,
    args,
    FLAGS.workers,
    FLAGS.gpus_per_worker,
    FLAGS.cpus_per_worker,
    FLAGS.nodes_per_worker,
    FLAGS.time,
    FLAGS.partition,
    FLAGS.setup,
  )
  script = os.path.join(FLAGS.sweepdir, "sweep.sbatch")
  submit = ["sbatch", script]
  if FLAGS.dry_run:
    print(text + "# submit with:\n" + shlex.join(submit))
    return
  os.makedirs(os.path.join(FLAGS.sweepdir, "slurm"), exist_ok=True)
  open_study(spec, sweep, FLAGS.sweepdir, FLAGS.heartbeat, FLAGS.max_retry)  # before the workers
  with open(script, "w", encoding="utf-8") as f:
    f.write(text)
  sys.exit(subprocess.call(submit))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    if not FLAGS.sweepdir:
      raise SweepError("--sweepdir is required")
    if storage.is_remote(FLAGS.sweepdir):
      raise SweepError(
        f"--sweepdir: {FLAGS.sweepdir} is a URL, but the sweepdir holds the study's "
        "lock and logs; give a local or shared directory, and put the trials in "
        "a bucket with --trials_dir=gs://BUCKET/path"
      )
    missing = [m for m in ("optuna", "matplotlib") if importlib.util.find_spec(m) is None]
    if missing:
      raise SweepError(f"sweeps need {' and '.join(missing)}: pip install -e '.[sweep]'")
    if FLAGS.report:
      print(report(Spec.read(FLAGS.sweepdir), FLAGS.sweepdir), flush=True)
      return
    spec, sweep = prepare(sys.argv)
    if FLAGS.executor == "slurm":
      run_slurm(spec, sweep)
    else:
      run_local(spec, sweep)
  except errors.UserError as e:
    errors.fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: errors.parse_flags(argv, define_flags))
