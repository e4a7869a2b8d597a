r"""Evaluates a run's checkpoints on the whole validation split (or another corpus).

  python -m pretrain.evaluate --workdir=runs/gpt                 # the latest checkpoint
  python -m pretrain.evaluate --workdir=runs/gpt --step=1000     # one checkpoint
  python -m pretrain.evaluate --workdir=runs/gpt --all           # every checkpoint kept, oldest first
  python -m pretrain.evaluate --workdir=runs/gpt --watch         # each new checkpoint once
  python -m pretrain.evaluate --workdir=runs/sst2 --best --predict=sst2.tsv  # fine-tuning: the
      # best checkpoint by the task's dev metric; its predictions in the task's submission format
  python -m pretrain.evaluate --workdir=runs/gpt --config.data.files='heldout/*.txt' --name=heldout \
      --config.data.split_by=tail --config.data.eval_split='train+validation'  # all of it

The run's resolved config (<workdir>/config.json) is the config; --config.<field>=<value>
overrides it (validated as in training). The tokenizer is always the run's own
(<workdir>/tokenizer.json), so other data is tokenized the run's way. Checkpoints saved under
any mesh, scanned or not, are evaluated on this process's devices: the run's mesh if it fits
them, else data parallel over all of them.

Output: one line per checkpoint on stdout; rows in <workdir>/eval.jsonl, one per (checkpoint,
dataset); TensorBoard scalars in <workdir>/tensorboard/<name>, beside the train run, under the
tags of the trainer's periodic evaluation (eval/loss, ...), so both curves share a chart.
eval.jsonl is also the record of what --watch has done: a restarted --watch skips the steps
it holds for --name. --watch reads only finished checkpoints (orbax lists a checkpoint once its
save is complete) and exits 0 once the run's final step is evaluated.
"""

import dataclasses
import json
import os
import time

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from input_pipeline import tokenizer as tokenizer_lib
from models import model_config
from pretrain.devices import process, sharding
from pretrain.ground import errors, storage
from pretrain.state import checkpointer, compatibility, run_files
from pretrain.training import config_checks, metrics, trainer

CheckpointError = checkpointer.CheckpointError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (config.json, checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step.")
_ALL = flags.DEFINE_bool("all", False, "Evaluate every checkpoint kept, oldest first.")
_WATCH = flags.DEFINE_bool(
  "watch", False, "Evaluate each new checkpoint once, until the final step."
)
_MAX_BATCHES = flags.DEFINE_integer(
  "max_batches", 0, "At most this many batches per split (0: all)."
)
_NAME = flags.DEFINE_string(
  "name",
  "eval",
  "Name of this evaluation: its TensorBoard run and its rows in eval.jsonl (use one per corpus).",
)
_POLL = flags.DEFINE_float("poll_seconds", 30.0, "--watch: seconds between looks for checkpoints.")
_BEST = flags.DEFINE_bool(
  "best",
  False,
  "Evaluate the best checkpoint (<workdir>/best, kept "
  "when config.checkpoint.keep_best) instead of the latest.",
)
_PREDICT = flags.DEFINE_string(
  "predict",
  "",
  "Fine-tuning tasks: write the predictions on the "
  "evaluation split to this file, in the task's submission format.",
)
_TIMEOUT = flags.DEFINE_float(
  "timeout",
  0.0,
  "--watch: give up (exit 1) after this many seconds without a new checkpoint (0: never).",
)
flags.mark_flags_as_required(["workdir"])


@dataclasses.dataclass
class Options:
  step: int | None = None  # one checkpoint
  all: bool = False  # every checkpoint kept
  watch: bool = False  # each new checkpoint once, until the final step
  max_batches: int = 0  # per split; 0: the whole split
  name: str = "eval"
  poll_seconds: float = 30.0
  timeout: float = 0.0
  best: bool = False  # the best checkpoint (<workdir>/best) rather than the latest
  predict: str = ""  # write the predictions here (fine-tuning tasks)

  def check(self):
    if sum([self.step is not None, self.all, self.watch, self.best]) > 1:
      raise CheckpointError("--step, --all, --watch and --best: give at most one of them")
    if self.predict and (self.all or self.watch):
      raise CheckpointError("--predict: writes one checkpoint's predictions; drop --all/--watch")
    if self.max_batches < 0:
      raise CheckpointError("--max_batches: must be >= 0 (0 evaluates the whole split)")
    if not self.name or os.sep in self.name:
      raise CheckpointError(f"--name: {self.name!r} must be a non-empty name without {os.sep!r}")


def _check_predict(options, objective):
  if options.predict and objective.write_predictions is None:
    raise CheckpointError(
      f"--predict: objective {objective.name!r} makes no predictions; it is for fine-tuning tasks"
    )


def evaluate_run(config, workdir, options=Options(), devices=None):
  """Evaluates the checkpoints of the run in `workdir` that `options` selects; returns
  {step: metrics}. Everything that can fail on the input fails before anything compiles, and
  nothing is written to the workdir until a checkpoint has been evaluated."""
  options.check()
  devices = jax.devices() if devices is None else list(devices)
  saved_config = run_files.run_config(workdir)
  ckpt = _open_checkpoints(workdir, options)
  try:
    available = ckpt.all_steps()
    if options.step is not None:
      run_files.check_step(ckpt, options.step)
    config = ml_collections.ConfigDict(config.to_dict())  # a copy: the caller's stays as it is
    config = _fit_mesh(config, saved_config, len(devices), sharding)
    config.init_from = ""  # where the run's parameters came from is no concern here
    config_checks.check(config, len(devices), jax.process_count())
    tok = _checked_tokenizer(config, saved_config, workdir, ckpt, available[-1], tokenizer_lib)
    if tok is not None:
      model_cfg = model_config.resolve(config.model, tok.get_vocab_size())
      compatibility.check_compatible(
        ckpt.meta(available[-1])["model"], model_cfg, ckpt.directory, ignore=("scan_layers",)
      )
    run = trainer.setup(config, devices, tok=tok, train=False)
    if tok is None:  # an older run without tokenizer.json: the config's must be the run's
      _check_tokenizer_identity(ckpt, available[-1], run.tok, tokenizer_lib)
      compatibility.check_compatible(
        ckpt.meta(available[-1])["model"], run.model_cfg, ckpt.directory, ignore=("scan_layers",)
      )
    _check_predict(options, run.objective)
    steps = run.build_steps()
    evaluator = run.evaluator(steps, options.max_batches, progress=True)
    record = Record(workdir, options.name, jax.process_index() == 0)
    for note in run.data_notes:
      record.print(note)
    results = {}

    def evaluate(step):
      params = compatibility.restore_params(ckpt, step, steps, run.objective, run.model_cfg)
      per = evaluator.per_dataset(params)
      results[step] = evaluator.summarize(per)
      record.add(step, run.total_steps, per, evaluator)
      if options.predict and jax.process_index() == 0:
        run.objective.write_predictions(per[""][1], evaluator.loaders[""], options.predict)
        record.print(f"wrote the predictions of step {step} to {options.predict}")

    if options.watch:
      _watch(ckpt, record, run.total_steps, evaluate, options)
    else:
      chosen = (
        available if options.all else [options.step if options.step is not None else available[-1]]
      )
      for step in chosen:
        evaluate(step)
    record.close()
    return results
  finally:
    ckpt.close()


def _open_checkpoints(workdir, options):
  """The run's checkpoints; with --watch, waits for the first one to land."""
  waited_since = time.monotonic()
  while True:
    try:
      if options.best:
        return run_files.open_run(os.path.join(workdir, "best"), "--best")
      return run_files.open_run(workdir, "--workdir")
    except checkpointer.CheckpointError:
      if not options.watch:
        raise
      if options.timeout and time.monotonic() - waited_since > options.timeout:
        raise TimeoutError(
          f"--watch: no checkpoint in {workdir} after {options.timeout:g} s; "
          "is the training job running?"
        ) from None
      time.sleep(options.poll_seconds)


def _fit_mesh(config, saved_config, num_devices, sharding):
  """The run's mesh when it fits these devices; else (unless overridden) data parallel."""
  try:
    sharding.mesh_shape(config.mesh, num_devices)
    return config
  except sharding.MeshError:
    if config.mesh.to_dict() != saved_config.mesh.to_dict():
      raise  # the user's own mesh: say what is wrong with it
  config.mesh.update(data=-1, fsdp=1, sequence=1, tensor=1)
  config.mesh.dcn.update(data=1, fsdp=1, sequence=1, tensor=1)
  print(f"the run's mesh does not fit {num_devices} devices: evaluating data parallel", flush=True)
  return config


def _checked_tokenizer(config, saved_config, workdir, ckpt, step, tokenizer_lib):
  """The run's tokenizer, checked against the checkpoint; refuses tokenizer overrides."""
  if config.data.tokenizer.to_dict() != saved_config.data.tokenizer.to_dict():
    raise tokenizer_lib.TokenizerError(
      "config.data.tokenizer: evaluation uses the run's own tokenizer; drop the "
      "--config.data.tokenizer overrides (other data is tokenized the run's way)"
    )
  tok = run_files.run_tokenizer(workdir)
  if tok is not None:
    _check_tokenizer_identity(ckpt, step, tok, tokenizer_lib)
  return tok


def _check_tokenizer_identity(ckpt, step, tok, tokenizer_lib):
  if ckpt.meta(step)["tokenizer"] != tokenizer_lib.identity(tok):
    raise tokenizer_lib.TokenizerError(
      f"config.data.tokenizer: the checkpoints in {ckpt.directory} were trained with another "
      "tokenizer than the run's tokenizer.json/config; evaluate them with the run's own files"
    )


def _watch(ckpt, record, final_step, evaluate, options):
  """Evaluates each finished checkpoint not yet in the record, oldest first, until the final
  step is done; a checkpoint that lands meanwhile is picked up on the next look."""
  import jax
  from jax.experimental import multihost_utils

  waited_since = time.monotonic()
  if final_step in record.done and jax.process_index() == 0:
    print(
      f"--watch: the final step {final_step} is already evaluated under this name; nothing "
      "to do (--name starts another evaluation)",
      flush=True,
    )
  while final_step not in record.done:
    pending = [s for s in ckpt.all_steps(reload=True) if s not in record.done]
    step = pending[0] if pending else -1
    if jax.process_count() > 1:  # every process evaluates the same step
      step = int(multihost_utils.broadcast_one_to_all(step))
    if step >= 0:
      try:
        evaluate(step)
      except Exception:
        if step in ckpt.all_steps(reload=True):
          raise
        errors.warn(
          f"step {step} was deleted before it could be evaluated "
          "(config.checkpoint.keep); skipping it"
        )
        record.done.add(step)
      waited_since = time.monotonic()
      continue
    if options.timeout and time.monotonic() - waited_since > options.timeout:
      raise TimeoutError(
        f"--watch: no new checkpoint in {options.timeout:g} s and step "
        f"{final_step} not reached; is the training job running?"
      )
    time.sleep(options.poll_seconds)


class Record:
  """Writes the results (stdout, eval.jsonl, TensorBoard) from process 0, and knows which steps
  are done under this evaluation's name."""

  def __init__(self, workdir, name, enabled):
    self.path, self.name, self.enabled = os.path.join(workdir, "eval.jsonl"), name, enabled
    self.tb_dir = os.path.join(workdir, "tensorboard", name)
    self.tb = None
    self.done = self._read_done()

  def _read_done(self):
    done = set()
    if storage.exists(self.path):
      for line in storage.read_text(self.path).splitlines():
        try:
          row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
          continue
        if row.get("name") == self.name:
          done.add(int(row["step"]))
    return done

  def print(self, line):
    if self.enabled:
      print(line, flush=True)

  def add(self, step, total_steps, per, evaluator):
    """The rows of one checkpoint: one per dataset of a mixture, and 'all' (together)."""
    together = evaluator.summarize(per)
    self.done.add(step)
    if not self.enabled:
      return
    rows = [
      dict(
        step=step,
        name=self.name,
        dataset=name,
        examples=self._examples(evaluator, name),
        **evaluator.objective.summarize(sums),
      )
      for name, (sums, _) in per.items()
      if name
    ]
    rows.append(
      dict(
        step=step,
        name=self.name,
        dataset="all",
        examples=sum(self._examples(evaluator, n) for n in per),
        **{k: v for k, v in together.items() if "/" not in k},
      )
    )
    log = storage.AppendLog(self.path)  # one write per checkpoint
    log.write("".join(json.dumps(r) + "\n" for r in rows))
    log.close()
    if self.tb is None:
      self.tb = metrics.import_tensorboardx().SummaryWriter(self.tb_dir)
    for k, v in together.items():
      self.tb.add_scalar(f"eval/{k}", float(v), step)
    self.tb.flush()
    print(
      f"step {step}/{total_steps} | {self.name} | {metrics.format_metrics(together)}", flush=True
    )

  @staticmethod
  def _examples(evaluator, name):
    loader = evaluator.loaders[name]
    return min(loader.num_examples, evaluator.num_batches(loader) * loader.batch_size)

  def close(self):
    if self.tb is not None:
      self.tb.close()


def parse_flags(argv):
  """--config is the run's config.json, overridable field by field like train's."""
  workdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")), None)
  if workdir is None and "--workdir" in argv[:-1]:
    workdir = argv[argv.index("--workdir") + 1]
  if workdir is None and any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv):
    print(__doc__)  # the flags depend on the run's config: --help with --workdir lists them
    raise SystemExit(0)
  if workdir is None:
    errors.fail("--workdir: required; give the workdir of a pretrain.train run")
  try:
    config = run_files.run_config(workdir)
  except errors.UserError as e:  # (a CheckpointError, or a bucket out of reach)
    errors.fail(str(e))
  return errors.parse_flags(
    argv,
    lambda: config_flags.DEFINE_config_dict(
      "config", config, "The run's config (overridable).", lock_config=True
    ),
  )


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  process.start()
  options = Options(
    step=_STEP.value,
    all=_ALL.value,
    watch=_WATCH.value,
    max_batches=_MAX_BATCHES.value,
    name=_NAME.value,
    poll_seconds=_POLL.value,
    timeout=_TIMEOUT.value,
    best=_BEST.value,
    predict=_PREDICT.value,
  )
  try:
    process.run_reporting_user_errors(evaluate_run, flags.FLAGS.config, _WORKDIR.value, options)
  except TimeoutError as e:
    print(f"error: {e}", flush=True)
    raise SystemExit(1) from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
