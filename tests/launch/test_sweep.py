"""launch.sweep end to end: real Optuna studies in SQLite, real trials of pretrain.train as
subprocesses, real signals (kill -9 of the sweep, SIGTERM of a pruned trial)."""

import csv
import json
import os
import pathlib
import random
import re
import shlex
import signal
import sys
import time

import pytest

from tests import helpers
from tests.helpers import REPO, xla_flags

optuna = pytest.importorskip("optuna")

from configs import sweeps
from launch import sweep, sweep_trials
from pretrain.ground import storage
from pretrain.state import results

CONFIG = "tests/fixtures/sweep/config.py"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A small text corpus: its preparation and tokenizer training take a second."""
  path = tmp_path_factory.mktemp("sweep_corpus") / "corpus.txt"
  words = (
    "the quick brown fox jumps over a lazy dog while seven birds sing of rivers and "
    "mountains under a pale winter sky"
  ).split()
  rng = random.Random(0)
  paragraphs = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(300)]
  path.write_text("\n\n".join(paragraphs))
  return str(path)


def _env():
  """One CPU device per trial (the tests' 8 fake devices would only slow the trials down)."""
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1))


def _argv(sweepdir, name, data_dir, corpus, *extra):
  return [
    sys.executable,
    "-m",
    "launch.sweep",
    f"--config={CONFIG}",
    f"--sweep={name}",
    f"--sweepdir={sweepdir}",
    "--poll=0.3",
    "--heartbeat=1",
    f"--config.data.data_dir={data_dir}",
    f"--config.data.files={corpus}",
    *extra,
  ]


def _commands_run(log):
  """How many times the trial's training command was started (its train.log)."""
  return pathlib.Path(log).read_text().count("\n$ ") + 1


def _wait_for(predicate, timeout, what):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, f"timed out waiting for {what}"
    time.sleep(0.2)


def test_grid_order_the_prune_sweep_relies_on():
  """GridSampler(seed=0) runs a 3-point grid in the order of indices 2, 1, 0."""
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [0, 1, 2]}, seed=0))
  study.optimize(lambda t: t.suggest_categorical("x", [0, 1, 2]), n_trials=3)
  assert [t.params["x"] for t in study.trials] == [2, 1, 0]


def _interrupt(argv, trial_dir, sig):
  """Starts the sweep and sends it `sig` once the trial in `trial_dir` has checkpointed."""
  sweep = helpers.Running(argv, _env())
  checkpointed = lambda: (trial_dir / "checkpoints" / "100").is_dir()
  assert sweep.caught(checkpointed, timeout=240), "".join(sweep.lines)
  sweep.signal(sig)
  return sweep.finish(), sweep.proc.returncode


@pytest.mark.slow
def test_sweep_stopped_killed_resumes_prunes_and_reports(tmp_path, corpus):
  """A 3-trial grid with the median pruner. The sweep is stopped with SIGTERM during its first
  trial, then killed with SIGKILL during its second; rerun, it skips the finished trial,
  resumes each interrupted one from its checkpoint, prunes the hopeless third, and ranks them."""
  sweepdir, data_dir = tmp_path / "sweep", tmp_path / "data"
  argv = _argv(sweepdir, "prune", data_dir, corpus)
  out, code = _interrupt(argv, sweepdir / "trials" / "0", signal.SIGTERM)
  assert code == 0, out  # stopped cleanly: its trial checkpointed and is queued again
  assert re.search(r"trial 0 stopped at step \d+; queued again", out), out
  second_trial = sweepdir / "trials" / "1"
  _interrupt(argv, second_trial, signal.SIGKILL)
  # the orphaned trial got SIGTERM from the kernel: it checkpointed and left
  _wait_for(
    lambda: "preempted: saved a checkpoint" in (second_trial / "train.log").read_text(),
    60,
    "the interrupted trial to checkpoint",
  )
  time.sleep(2.5)  # its heartbeat goes stale (2 x --heartbeat)

  rerun = helpers.run_python(argv, _env())
  out = rerun.stdout + rerun.stderr
  assert rerun.returncode == 0, out
  trials = {
    n: json.loads((sweepdir / "trials" / str(n) / "trial.json").read_text()) for n in range(3)
  }
  assert [trials[n]["overrides"]["optimizer.lr"] for n in range(3)] == [3e-2, 1e-2, 1e-7]
  for n in (0, 1):  # each resumed once, not restarted; finished, not rerun
    assert _commands_run(sweepdir / "trials" / str(n) / "train.log") == 2
    assert "resumed from step" in (sweepdir / "trials" / str(n) / "train.log").read_text()
  assert "trial 1 started (resuming its checkpoints)" in out
  assert "trial 0 started" not in out
  pruned_at = int(re.search(r"trial 2 pruned at step (\d+)", out).group(1))
  assert 100 <= pruned_at < 600  # at an evaluation, long before the end
  log2 = (sweepdir / "trials" / "2" / "train.log").read_text()
  assert "preempted: saved a checkpoint at step" in log2  # SIGTERM: it checkpointed
  leftovers = [p for p in sweepdir.glob("trials/*/checkpoints/*") if "tmp" in p.name]
  assert not leftovers

  # the table: every trial, ranked by its best eval loss, the pruned one said to be so
  with open(sweepdir / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  best = {
    n: min(
      r["loss"]
      for r in json.loads((sweepdir / "trials" / str(n) / "results.json").read_text())["history"]
    )
    for n in range(3)
  }
  assert [int(r["trial"]) for r in rows] == sorted(best, key=best.get)
  assert {int(r["trial"]): r["state"] for r in rows} == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
  for r in rows:
    assert float(r["best"]) == pytest.approx(best[int(r["trial"])])
  assert pruned_at <= int(next(r for r in rows if r["trial"] == "2")["steps"]) < 600
  assert "| PRUNED |" in (sweepdir / "results.md").read_text()
  # the best trial's full command, printed and recorded
  winner = rows[0]["trial"]
  assert shlex.join(trials[int(winner)]["command"]) in out

  # the plot: a valid PNG; one curve per trial
  from matplotlib import image

  assert image.imread(sweepdir / "sweep.png").ndim == 3
  from launch import sweep_report

  study = optuna.load_study(study_name="prune", storage=f"sqlite:///{sweepdir}/study.db")
  fig = sweep_report.plot(sweep_trials.records(study), "loss", "min", str(tmp_path / "again.png"))
  assert len(fig.axes[0].get_lines()) == 3
  # the HParams summary beside each trial's own scalars: one TensorBoard logdir for all
  for n in range(3):
    assert list((sweepdir / "trials" / str(n) / "tensorboard").glob("*.hparams"))


@pytest.mark.slow
def test_two_workers_split_the_trials(tmp_path, corpus, gcs):
  """Two workers started at once on one SQLite study and one fresh data_dir: each trial runs
  exactly once, both workers take some, the data is prepared once, and a trial that fails is
  reported with the end of its log without stopping the sweep. The trials' workdirs are in a
  bucket (--trials_dir, a local GCS emulator); their logs stay in the sweepdir."""
  sweepdir, data_dir, trials = tmp_path / "sweep", tmp_path / "data", gcs("trials")
  argv = _argv(sweepdir, "pair", data_dir, corpus, "--worker", f"--trials_dir={trials}")
  workers = [helpers.Running(argv, _env()) for _ in range(2)]
  outs = [w.finish() for w in workers]
  assert [w.proc.returncode for w in workers] == [0, 0], outs
  study = optuna.load_study(study_name="pair", storage=f"sqlite:///{sweepdir}/study.db")
  records = sweep_trials.records(study)
  assert [(r["trial"], r["state"], r["overrides"]["optimizer.lr"]) for r in records] == [
    (0, "COMPLETE", 3e-2),
    (1, "COMPLETE", 3e-3),
    (2, "FAIL", -1.0),
  ]
  for r in records:
    assert r["workdir"] == f"{trials}/{r['trial']}"
    assert r["log"] == str(sweepdir / "trials" / str(r["trial"]) / "train.log")
    assert _commands_run(r["log"]) == 1
  for r in records[:2]:  # the finished trials' runs, with the values the study holds
    history = results.read_history(r["workdir"])
    assert r["best"] == min(h["loss"] for h in history)
    assert storage.exists(f"{r['workdir']}/checkpoints")
  # (a surplus trial, created by both workers' race for the last one, never started)
  assert len({t.user_attrs["worker"] for t in study.trials if "trial" in t.user_attrs}) == 2
  assert sum(out.count("started") for out in outs) == 3
  assert all(out.count("started") >= 1 for out in outs)
  logs = [pathlib.Path(r["log"]).read_text() for r in records]
  assert sum("tokenized local_text" in log for log in logs) == 1
  # the failure, with the end of the trial's log, in the worker's output and the study
  error = "error: config.optimizer: need lr > 0 and 0 <= min_lr <= lr"
  failed = next(out for out in outs if "trial 2 failed" in out)
  assert re.search(r"trial 2 failed \(exit 2\); the end of its log \(.*train\.log\):\n", failed)
  assert error in failed and error in records[2]["log_tail"]
  # workers print no report; --report, given only the sweepdir, does
  assert not any("objective:" in out for out in outs)
  report = helpers.run_python(
    [sys.executable, "-m", "launch.sweep", f"--sweepdir={sweepdir}", "--report"], _env()
  )
  assert report.returncode == 0, report.stderr
  assert report.stdout.startswith("objective: eval loss (min)")
  assert "| FAIL |" in report.stdout
  best = min(records[:2], key=lambda r: r["best"])
  assert f"best trial {best['trial']}: loss {best['best']:.4g}" in report.stdout
  assert shlex.join(best["command"]) in report.stdout
  assert f"tensorboard --logdir {trials}" in report.stdout
  assert any(
    p.name.endswith(".hparams") for p in storage.path(f"{best['workdir']}/tensorboard").iterdir()
  )  # the HParams session, in the bucket


def test_slurm_dry_run_prints_the_array_job(tmp_path):
  sweepdir = tmp_path / "sweep"
  out = helpers.run_python(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      f"--config={CONFIG}",
      "--sweep=pair",
      f"--sweepdir={sweepdir}",
      "--executor=slurm",
      "--workers=16",
      "--gpus_per_worker=2",
      "--storage=postgresql://db.example/sweeps",
      "--partition=gpu",
      "--dry_run",
      "--config.optimizer.warmup_steps=5",
    ],
    _env(),
  )
  assert out.returncode == 0, out.stderr
  script, submit = out.stdout.split("# submit with:\n")
  lines = script.splitlines()
  assert lines[0] == "#!/bin/bash"
  for directive in (
    "--job-name=sweep-pair",
    "--array=0-15",
    "--nodes=1",
    "--ntasks-per-node=1",
    "--gpus-per-node=2",
    "--partition=gpu",
    "--signal=B:TERM@120",
    f"--output={sweepdir}/slurm/%x-%A_%a.out",
  ):
    assert f"#SBATCH {directive}" in lines
  assert lines.index("set -euo pipefail") > max(
    i for i, l in enumerate(lines) if l.startswith("#SBATCH")
  )
  assert lines[-2] == f"cd {shlex.quote(str(REPO))}"
  worker = shlex.split(lines[-1])
  assert worker[:4] == ["exec", sys.executable, "-m", "launch.sweep"]
  assert set(worker[4:]) == {
    f"--config={CONFIG}",
    "--sweep=pair",
    f"--sweepdir={sweepdir}",
    "--storage=postgresql://db.example/sweeps",
    "--config.optimizer.warmup_steps=5",
    "--worker",
    "--heartbeat=60",
    "--max_retry=3",
  }
  assert submit.strip() == f"sbatch {sweepdir}/sweep.sbatch"
  assert not sweepdir.exists()  # a dry run creates nothing
  # a worker of several nodes starts each trial on all of them through srun, as launch.slurm
  args = sweep.worker_args(
    {"config": CONFIG, "sweep": "pair", "storage": "sqlite:///s.db", "overrides": []},
    str(sweepdir),
    0,
    60,
    3,
    nodes=2,
  )
  assert args[-2:] == ["--processes_per_trial=2", "--trial_launcher=srun"]
  spec = {"config": CONFIG, "overrides": [], "objective_overrides": []}
  trial = sweep_trials.trial_command(spec, {"optimizer.lr": 0.1}, "w", 2, "srun")
  assert trial[:4] == ["srun", "--kill-on-bad-exit=1", "env", "PRETRAIN_DISTRIBUTED=1"]
  assert trial[4:] == sweep_trials.trial_command(spec, {"optimizer.lr": 0.1}, "w")
  local = sweep_trials.trial_command(spec, {}, "w", 2, "local")
  assert local[1:5] == ["-m", "launch.local", "--num_processes=2", "--"]


@pytest.mark.slow
def test_bad_sweeps_are_refused_before_any_trial(tmp_path):
  from tests.fixtures.sweep import config as sweep_config

  config = sweep_config.get_config()
  with pytest.raises(
    sweep.SweepError, match=r"'nope' is not defined in .*; it defines accuracy, pair, prune$"
  ):
    sweep.load_sweep(CONFIG, "nope")
  with pytest.raises(
    sweep.SweepError, match=r"sweep field optimizer\.lrr = 0\.1: the config has no such field"
  ):
    sweep.resolve(sweeps.grid({"optimizer.lrr": [0.1]}), config)
  with pytest.raises(sweep.SweepError, match=r"sweep field optimizer\.lr = 'high'"):
    sweep.resolve(sweeps.random({"optimizer.lr": ["high", 0.1]}, trials=2), config)
  with pytest.raises(sweep.SweepError, match="the grid is empty .optimizer.lr has no values"):
    sweep.resolve(sweeps.grid({"optimizer.lr": []}), config)

  def suggest(trial):
    return {"model.widthh": trial.suggest_int("w", 1, 4)}

  with pytest.raises(sweep.SweepError, match="model.widthh"):
    sweep.resolve(sweeps.tpe(suggest, trials=4), config)
  # the objective: the config's best_metric by default, or the sweep's, passed to each trial
  resolved = sweep.resolve(sweep.load_sweep(CONFIG, "accuracy"), config)
  assert (resolved.metric, resolved.mode, resolved.trials) == ("accuracy", "max", 2)
  assert sweep.resolve(sweep.load_sweep(CONFIG, "pair"), config).trials == 3
  # a sweepdir holding another sweep
  spec = sweep.Spec(config=CONFIG + ":smoke", config_path="/c.py", sweep="pair", overrides=[])
  spec.write(str(tmp_path))
  other = sweep.Spec(spec, sweep="prune")
  with pytest.raises(sweep.SweepError, match="holds sweep 'pair' of .*; give another --sweepdir"):
    other.check_same(str(tmp_path))
  spec.check_same(str(tmp_path))  # the same sweep: continued

  # the command line: one error line, exit 2, nothing created
  sweepdir = tmp_path / "new"
  out = helpers.run_python(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      f"--config={CONFIG}",
      "--sweep=nope",
      f"--sweepdir={sweepdir}",
    ],
    _env(),
  )
  assert out.returncode == 2 and not out.stdout
  assert out.stderr.strip().splitlines() == [
    f"error: --sweep: 'nope' is not defined in {CONFIG}; it defines accuracy, pair, prune"
  ]
  assert not sweepdir.exists()
  # a sweepdir in a bucket (the trials may be there: --trials_dir), and another trials_dir
  out = helpers.run_python(
    [
      sys.executable,
      "-m",
      "launch.sweep",
      f"--config={CONFIG}",
      "--sweep=pair",
      "--sweepdir=gs://bucket/sweep",
    ],
    _env(),
  )
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  assert (
    out.stderr.startswith("error: --sweepdir: gs://bucket/sweep is a URL")
    and ("--trials_dir=gs://BUCKET/path" in out.stderr)
    and not os.path.exists(REPO / "gs:")
  )
  spec = sweep.Spec(spec, trials_dir="")
  with pytest.raises(sweep.SweepError, match=r"--trials_dir: the sweep in .* keeps its trials in "):
    sweep.Spec(spec, trials_dir="gs://b/elsewhere").check_trials_dir(str(tmp_path))
  assert sweep.Spec(spec, trials_dir="").check_trials_dir(str(tmp_path)) == ""


def test_local_slots_give_each_trial_its_own_devices(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
  gpus = sweep_trials.trial_slots(2, gpus=4)
  assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in gpus] == ["0,1,2,3", "4,5,6,7"]
  assert [cores for _, cores in gpus] == [[0, 1, 2, 3], [4, 5, 6, 7]]
  chips = sweep_trials.trial_slots(4, tpu_chips=1)
  assert [env["TPU_VISIBLE_CHIPS"] for env, _ in chips] == ["0", "1", "2", "3"]
  assert {env["TPU_CHIPS_PER_PROCESS_BOUNDS"] for env, _ in chips} == {"1,1,1"}
  assert len({env["TPU_PROCESS_PORT"] for env, _ in chips}) == 4  # one runtime each
  assert [cores for _, cores in sweep_trials.trial_slots(3, cpus=2)] == [[0, 1], [2, 3], [4, 5]]
