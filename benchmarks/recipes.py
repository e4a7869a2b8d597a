r"""Modern training recipes against the GPT-2/nanoGPT AdamW baseline, on the same data.

  python -m benchmarks.recipes --corpus=shakespeare --workdir=/tmp/recipes
  python -m benchmarks.recipes --corpus=smoke --workdir=/tmp/recipes_smoke --steps=400
  python -m benchmarks.recipes --runs=adamw,muon@3e-3,best@4e-3:1000 ...

Each run is `pretrain.train` (trainer.train_and_evaluate) with one config change: an optimizer
(config.optimizer.name), an architecture switch (config.model) or a schedule, or several (the
`best` combination). A run spec is NAME[@LR][:STEPS]: LR sets the peak lr (min_lr a tenth of it),
STEPS the length of its run (its schedule ends there). The first run is the baseline; the
table reports, for every run, the steps (and the wall time) it took to reach the baseline's
final validation loss, read off its evaluations every `--eval_every` steps (linear between
two), and its median time per step beside the baseline's. Runs already in --workdir are read
back rather than rerun, so the table can grow a run at a time.

Corpora: `shakespeare` is nanoGPT's CPU recipe on tinyshakespeare (benchmarks/shakespeare_char:
char-level, 4 layers x 128, block 64, batch 12, 2,000 steps, AdamW lr 1e-3, cosine to 1e-4);
`smoke` is configs/gpt.py:smoke, the bundled corpus with its BPE of 512.
"""

import json
import os
import statistics

from absl import app, flags

from benchmarks import shakespeare_config
from configs import common, gpt
from pretrain.devices import host_memory
from pretrain.ground import storage
from pretrain.training import trainer

_CORPUS = flags.DEFINE_enum(
  "corpus", "shakespeare", ["shakespeare", "smoke"], "Which data and model."
)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/recipes", "Runs and prepared data (kept).")
_DATA = flags.DEFINE_string("data", shakespeare_config.DEFAULT_DATA, "tinyshakespeare input.txt")
_RUNS = flags.DEFINE_list(
  "runs",
  [
    "adamw",
    "lion",
    "muon",
    "adafactor",
    "qk_norm",
    "relu2",
    "softcap",
    "zero_init",
    "z_loss",
    "wsd",
    "best",
  ],
  "Run specs NAME[@LR][:STEPS]; the first is the baseline.",
)
_STEPS = flags.DEFINE_integer("steps", 0, "Steps of each run (0: the corpus's recipe).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 0, "Evaluate every N steps (0: steps / 20).")
_EVAL_BATCHES = flags.DEFINE_integer("eval_batches", 40, "Validation batches per evaluation.")
_TIMING_STEPS = flags.DEFINE_integer(
  "timing_steps",
  0,
  "> 0: time each run's step instead, in short runs of this many steps one "
  "after another (the long runs' times are only as steady as the machine was meanwhile).",
)

# Each variant's changes to the baseline config (dotted fields). Learning rates are the
# defaults each optimizer is run at unless a spec gives one (`--runs=lion@1e-4`).
VARIANTS = {
  "adamw": {},
  "lion": {"optimizer.name": "lion", "optimizer.b2": 0.99},
  "muon": {"optimizer.name": "muon"},
  "adafactor": {"optimizer.name": "adafactor"},
  "qk_norm": {"model.qk_norm": True},
  "relu2": {"model.mlp": "relu2"},
  "softcap": {"model.logit_softcap": 15.0},
  "zero_init": {"model.zero_init_proj": True},
  "z_loss": {"model.z_loss": 1e-4},
  "wsd": {"optimizer.schedule": "wsd", "optimizer.decay_shape": "1-sqrt"},
  "untied": {"model.tie_embeddings": False},
  "best": {
    "optimizer.name": "muon",
    "model.qk_norm": True,
    "model.mlp": "relu2",
    "model.zero_init_proj": True,
    "optimizer.schedule": "wsd",
    "optimizer.decay_shape": "1-sqrt",
  },
}


def parse_spec(spec):
  """'name@lr:steps' -> (name, lr or None, steps or None)."""
  rest, _, steps = spec.partition(":")
  name, _, lr = rest.partition("@")
  if name not in VARIANTS:
    raise app.UsageError(f"--runs: unknown run {name!r}; choose from {', '.join(VARIANTS)}")
  return name, float(lr) if lr else None, int(steps) if steps else None


def base_config(corpus, data_dir):
  if corpus == "shakespeare":
    return shakespeare_config.get_config(_DATA.value, data_dir, 2000)
  config = gpt.get_config("smoke")
  config.data.data_dir = data_dir
  config.train.total_steps = 200
  return config


def run_config(spec, data_dir):
  name, lr, steps = parse_spec(spec)
  config = base_config(_CORPUS.value, data_dir)
  common.apply_overrides(config, VARIANTS[name])
  if lr:
    config.optimizer.update(lr=lr, min_lr=lr / 10)
  total = steps or _STEPS.value or config.train.total_steps
  every = _EVAL_EVERY.value or max(1, total // 20)
  config.train.update(
    total_steps=total, eval_every=every, log_every=every, eval_batches=_EVAL_BATCHES.value
  )
  config.checkpoint.update(every=0)
  return config


def run_dir(spec, *sub):
  """<workdir>/<corpus>[/sub]/<spec as a directory name>."""
  name = spec.replace("@", "_lr").replace(":", "_s")
  return os.path.join(_WORKDIR.value, _CORPUS.value, *sub, name)


def logged(workdir):
  """The rows of a run's metrics.jsonl."""
  return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


def run(spec, data_dir):
  """The run's summary: its evaluations and its median step time (from its metrics.jsonl)."""
  workdir = run_dir(spec)
  summary_path = os.path.join(workdir, "recipe_summary.json")
  if os.path.exists(summary_path):
    return json.load(open(summary_path))
  config = run_config(spec, data_dir)
  trainer.train_and_evaluate(config, workdir)
  rows = logged(workdir)
  evals = [(r["step"], r["eval/loss"]) for r in rows if "eval/loss" in r]
  times = [r["train/step_time_s"] for r in rows if "train/step_time_s" in r][1:]
  summary = {
    "spec": spec,
    "lr": config.optimizer.lr,
    "steps": config.train.total_steps,
    "evals": evals,
    "final": evals[-1][1],
    "step_s": statistics.median(times),
  }
  storage.write_json(summary_path, summary)
  return summary


def step_time(spec, data_dir):
  """Median ms/step of a short run of `spec` (--timing_steps, evaluated only at the end)."""
  workdir = run_dir(spec, "timing")
  if os.path.exists(workdir):
    import shutil

    shutil.rmtree(workdir)
  config = run_config(spec, data_dir)
  steps = _TIMING_STEPS.value
  config.train.update(total_steps=steps, log_every=max(1, steps // 5), eval_every=0, eval_batches=1)
  trainer.train_and_evaluate(config, workdir)
  rows = logged(workdir)
  return statistics.median(r["train/step_time_s"] for r in rows if "train/step_time_s" in r) * 1e3


def steps_to(evals, target):
  """The first step at which the validation loss reaches `target`, linear between the two
  evaluations around it (None if it never does)."""
  prev = (0, float("inf"))
  for step, loss in evals:
    if loss <= target:
      if prev[1] == float("inf"):
        return step
      return prev[0] + (step - prev[0]) * (prev[1] - target) / (prev[1] - loss)
    prev = (step, loss)
  return None


def table(summaries):
  base = summaries[0]
  target = base["final"]
  lines = [
    f"target: the baseline ({base['spec']}) final validation loss {target:.4f} after "
    f"{base['steps']} steps",
    "| run | lr | steps | final val loss | steps to target | / baseline | ms/step | "
    "/ baseline | time to target |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for s in summaries:
    reach = steps_to(s["evals"], target)
    ratio = f"{reach / base['steps']:.2f}" if reach is not None else "not reached"
    time_to = f"{reach * s['step_s']:.1f} s" if reach is not None else ""
    lines.append(
      f"| {s['spec']} | {s['lr']:g} | {s['steps']} | {s['final']:.4f} | "
      f"{'' if reach is None else round(reach)} | {ratio} | {s['step_s'] * 1e3:.1f} | "
      f"{s['step_s'] / base['step_s']:.2f} | {time_to} |"
    )
  return "\n".join(lines)


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  if _CORPUS.value == "shakespeare" and not os.path.exists(_DATA.value):
    raise app.UsageError(f"--data: {_DATA.value} not found (tinyshakespeare input.txt)")
  for spec in _RUNS.value:
    parse_spec(spec)  # every spec checked before the first run
  data_dir = os.path.join(_WORKDIR.value, _CORPUS.value, "data")
  if _TIMING_STEPS.value:
    times = {spec: step_time(spec, data_dir) for spec in _RUNS.value}
    base = times[_RUNS.value[0]]
    print("| run | ms/step | / baseline |\n|---|---|---|")
    for spec, ms in times.items():
      print(f"| {spec} | {ms:.1f} | {ms / base:.2f} |")
    return
  summaries = []
  for spec in _RUNS.value:
    summaries.append(run(spec, data_dir))
    print(table(summaries), flush=True)


if __name__ == "__main__":
  app.run(main)
