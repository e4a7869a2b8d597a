"""A run's workdir: its files (config.json, tokenizer.json, checkpoints/), the lock a trainer
holds on it, and opening a run's checkpoints to read.
"""

import contextlib
import fcntl
import json
import os

import jax
import ml_collections
import tokenizers

from input_pipeline import tokenizer
from models import model_config
from pretrain.ground import storage
from pretrain.objectives import registry
from pretrain.state import checkpointer, compatibility
from pretrain.training import optimizer
from pretrain.training import steps as steps_lib


@contextlib.contextmanager
def workdir_lock(workdir):
  """Process 0 holds an exclusive lock on <workdir>/.lock while it trains there: a second
  trainer started on the same workdir refuses at once, and the lock of a process that dies
  (even by kill -9) goes with it. A run that fails before writing anything leaves nothing.
  Object storage has no locks: there, no lock is taken (one trainer per workdir is up to you)."""
  if jax.process_index() != 0 or storage.is_remote(workdir):
    yield
    return
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, ".lock")
  f = open(path, "a", encoding="utf-8")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise checkpointer.CheckpointError(
      f"--workdir: another trainer is running in {workdir} (it holds "
      f"{path}); wait for it or stop it, or give another workdir"
    ) from None
  try:
    yield
  except BaseException:
    if created and os.listdir(workdir) == [".lock"]:
      os.remove(path)
      os.rmdir(workdir)
    raise
  finally:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def run_dir(path: str) -> str:
  """A run's workdir, given it or its checkpoints directory."""
  path = path.rstrip("/")
  return os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path


def run_tokenizer(path: str) -> tokenizers.Tokenizer | None:
  """The tokenizer a run trained with (<workdir>/tokenizer.json), or None for older runs."""
  file = os.path.join(run_dir(path), "tokenizer.json")
  return tokenizer.from_str(storage.read_text(file)) if storage.isfile(file) else None


def inherit_model(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config`, or a copy whose model is config.init_from's (the run's resolved model in its
  config.json) when config.model.size is 'from_init', keeping compatibility.OWN_FIELDS."""
  if config.model.size != "from_init":
    return config
  if not config.init_from:
    raise checkpointer.CheckpointError(
      "config.model.size: 'from_init' takes the model of config.init_from, "
      "which is empty; set config.init_from=RUN or give a size (size=base)"
    )
  path = os.path.join(run_dir(config.init_from), "config.json")
  if not storage.isfile(path):
    raise checkpointer.CheckpointError(
      f"config.init_from: {config.init_from!r} has no config.json to take "
      "the model from; give a run's workdir or a size (size=base)"
    )
  saved = json.loads(storage.read_text(path))["resolved_model"]
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in saved.items():
    if field in config.model and field not in compatibility.OWN_FIELDS:
      config.model[field] = value
  return config


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's resolved config (<workdir>/config.json) as a ConfigDict, without the derived
  model (config.json's 'resolved_model')."""
  storage.check(workdir, "--workdir")  # a bucket that is missing or out of reach: one line
  path = os.path.join(workdir, "config.json")
  if not storage.isfile(path):
    raise checkpointer.CheckpointError(
      f"--workdir: {workdir!r} has no config.json; give the workdir of a pretrain.train run"
    )
  config = json.loads(storage.read_text(path))
  config.pop("resolved_model", None)
  return ml_collections.ConfigDict(config)


def write_run_files(
  workdir: str,
  config: ml_collections.ConfigDict,
  model_cfg: model_config.ModelConfig,
  tok: tokenizers.Tokenizer,
  total_steps: int | None = None,
) -> None:
  """config.json (the resolved config, with the resolved model and, when given, the run's
  length in steps as train.total_steps, in place of its epochs or tokens) and tokenizer.json: what run_config and
  `pretrain.evaluate` read back."""
  storage.makedirs(workdir)
  resolved = dict(config.to_dict(), resolved_model=model_cfg.to_dict())
  if total_steps is not None:  # an epoch-based run's length, for readers without its data
    resolved["train"] = dict(
      resolved["train"], total_steps=total_steps, epochs=0.0, total_tokens=0
    )  # the length in steps alone (config_checks)
  storage.write_json(os.path.join(workdir, "config.json"), resolved)
  storage.write_atomic(os.path.join(workdir, "tokenizer.json"), tok.save)


def write_step_zero(
  workdir: str,
  config: ml_collections.ConfigDict,
  model_cfg: model_config.ModelConfig,
  params: dict,
  tok: tokenizers.Tokenizer,
) -> None:
  """A run at step 0 that holds `params`: its files, and a checkpoint of the train state the
  trainer would start from with them (an imported model becomes such a run)."""
  write_run_files(workdir, config, model_cfg, tok)
  tok_id = tokenizer.identity(tokenizer.load(os.path.join(workdir, "tokenizer.json")))
  _, logical = steps_lib.model_logical_specs(registry.get(config.objective), model_cfg)
  tx, _ = optimizer.make(config.optimizer, config.train.total_steps, logical)
  state = steps_lib.state_of(params, tx, jax.random.PRNGKey(config.seed))
  meta = run_meta(
    model_cfg, tok_id, 0, config.seed, optimizer_name=optimizer.name(config.optimizer)
  )
  ckpt = checkpointer.Checkpointer(os.path.join(workdir, "checkpoints"))
  ckpt.save(0, state, meta, force=True)
  ckpt.close()


def run_meta(model_cfg, tok_id, step, seed, datasets=None, optimizer_name="adamw"):
  """The 'meta' item of a checkpoint: the model, the tokenizer's identity, the optimizer (its
  state's layout), the data position (and the datasets' sizes and weights, when known)."""
  data = {"step": step, "seed": seed, "process_count": jax.process_count()}
  if datasets is not None:
    data["datasets"] = datasets
  return {
    "model": model_cfg.to_dict(),
    "tokenizer": tok_id,
    "optimizer": optimizer_name,
    "data": data,
  }


def check_step(ckpt: checkpointer.Checkpointer, step: int) -> int:
  """`step` if `ckpt` holds it; else a one-line error listing the steps it does hold."""
  steps = ckpt.all_steps()
  if step not in steps:
    raise checkpointer.CheckpointError(
      f"--step: no checkpoint at step {step} in {ckpt.directory}; it holds "
      f"steps {', '.join(map(str, steps))}"
    )
  return step


def open_run(path: str, field: str) -> checkpointer.Checkpointer:
  """A read-only checkpointer.Checkpointer over a run's workdir or its checkpoints directory; an error
  naming `field` when it holds no checkpoint."""
  source = path
  storage.check(source, field)
  if storage.isdir(os.path.join(source, "checkpoints")):  # a run's workdir
    source = os.path.join(source, "checkpoints")
  if not storage.isdir(source):
    raise checkpointer.CheckpointError(
      f"{field}: no checkpoints in {path!r}; give a run's workdir or its checkpoints directory"
    )
  ckpt = checkpointer.Checkpointer(source, read_only=True)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise checkpointer.CheckpointError(
      f"{field}: no checkpoint in {path!r}; give a run's workdir or its "
      "checkpoints directory (train first)"
    )
  return ckpt
