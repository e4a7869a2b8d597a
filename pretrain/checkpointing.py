"""orbax checkpoints: everything that makes a run resumable.

A checkpoint at step s holds 'state' (params, optimizer state, step, RNG key; restored straight
into the current mesh's shardings) and 'meta' (JSON: the model config, the tokenizer's identity
and the data position). Saves are asynchronous, every `config.checkpoint.every` steps and at the
end, keeping the last `config.checkpoint.keep`. A save in flight is written to a temporary
directory and renamed when complete, so a crash never leaves a half checkpoint as "latest".

Resume order (see pretrain/trainer.py): <workdir>/checkpoints, then config.init_from
(parameters only), then a fresh initialisation.
"""
import dataclasses
import functools
import json
import os
from typing import Optional

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from configs import errors
from input_pipeline import tokenized
from models import layer_stack
from pretrain import sharding, steps as steps_lib


class CheckpointError(errors.UserError):
  pass


class Checkpointer:

  def __init__(self, directory, *, keep=1, async_save=False, read_only=False):
    self.directory = os.path.abspath(directory)
    # The trainer decides when to save (durations.every) and always passes force=True.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
        cleanup_tmp_directories=not read_only)
    # A read-only manager (config.init_from) reads 'state' with the generic PyTree handler so
    # that it can restore the parameters alone.
    state_handler = ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler()
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": state_handler, "meta": ocp.JsonCheckpointHandler()})

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self, reload=False):
    """The steps of complete checkpoints, oldest first (`reload`: look again on disk, for
    checkpoints another process has finished since)."""
    if reload:
      self.manager.reload()
    return sorted(self.manager.all_steps())

  def save(self, step, state, meta, *, force=False):
    return self.manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(meta)), force=force)

  def meta(self, step):
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step, abstract_state):
    """Restores 'state' into the shardings of `abstract_state` (ShapeDtypeStructs)."""
    return self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))["state"]

  def restore_params(self, step, abstract_params):
    """Restores only state['params'] (for config.init_from), into the given shardings."""
    item = {"params": abstract_params}
    return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))["state"]["params"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


# Fields a user sets come before the ones derived from them (d_model before head_dim), so an
# error names the field that was changed.
SHAPE_FIELDS = ("vocab_size", "num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim",
                "d_ff", "max_len", "position", "norm", "mlp", "use_bias", "tie_embeddings",
                "scan_layers")


def check_compatible(saved_model, model, where, ignore=()):
  """Errors (one line, naming the field) if a checkpoint's model differs in any shape field
  (but those in `ignore`)."""
  for field in SHAPE_FIELDS:
    if field in ignore:
      continue
    if field in saved_model and saved_model[field] != model[field]:
      raise CheckpointError(
          f"config.model.{field}: the checkpoint in {where} has {field}={saved_model[field]!r} but "
          f"the config has {model[field]!r}; match the checkpoint's model or use a fresh workdir")


def restore_params(ckpt, step, steps, objective, model_cfg):
  """The parameters of checkpoint `step`, in the shardings of `steps` (any mesh), converted
  from the checkpoint's layer layout (scanned or not) to `model_cfg`'s."""
  saved = ckpt.meta(step)["model"]
  check_compatible(saved, model_cfg, ckpt.directory, ignore=("scan_layers",))
  scan = saved.get("scan_layers", model_cfg.scan_layers)
  target = steps.abstract_state["params"]
  if scan == model_cfg.scan_layers:
    return ckpt.restore_params(step, target)
  saved_cfg = ml_collections.ConfigDict(dict(model_cfg.to_dict(), scan_layers=scan))
  _, logical = steps_lib.model_logical_specs(objective, saved_cfg)
  shapes = jax.eval_shape(lambda: steps_lib.init_params(objective, saved_cfg, jax.random.PRNGKey(0)))
  shardings = sharding.tree_shardings(logical, steps.mesh, steps.rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          shapes, shardings)
  restored = ckpt.restore_params(step, abstract)
  convert = functools.partial(layer_stack.to_layout, scan=model_cfg.scan_layers)
  return jax.jit(convert, out_shardings=steps.state_shardings["params"])(restored)


@dataclasses.dataclass
class Start:
  """Where a run starts (the resume order), decided and checked before anything compiles."""
  ckpt: Checkpointer                 # <workdir>/checkpoints
  latest: Optional[int]              # its latest step: resume from there
  init_from: Optional[Checkpointer]  # else config.init_from's checkpoints: parameters only

  def describe(self, total_steps):
    if self.latest is not None:
      return f"resumed from step {self.latest} of {total_steps}"
    source = ("initialised from scratch" if self.init_from is None else
              f"parameters from {self.init_from.directory} step {self.init_from.latest_step()}")
    return f"{source}; training for {total_steps} steps"

  def close(self):
    for ckpt in (self.ckpt, self.init_from):
      if ckpt is not None:
        ckpt.close()


def find_start(config, workdir, model_cfg, tok_id, datasets_meta):
  """Opens the run's checkpoints and decides the start: the workdir's latest checkpoint, else
  config.init_from, else scratch. Everything that can fail on a checkpoint fails here, before
  <workdir>/checkpoints is created."""
  directory = os.path.join(workdir, "checkpoints")
  make = lambda: Checkpointer(directory, keep=config.checkpoint.keep,
                              async_save=config.checkpoint.async_save)
  ckpt = make() if os.path.isdir(directory) else None
  latest = ckpt.latest_step() if ckpt is not None else None
  init_from = None
  if latest is not None:
    meta = ckpt.meta(latest)
    check_compatible(meta["model"], model_cfg, ckpt.directory)
    if meta["tokenizer"] != tok_id:
      raise CheckpointError(
          f"config.data.tokenizer: the checkpoint in {ckpt.directory} was trained with another "
          "tokenizer; use the same data and tokenizer settings or a fresh workdir")
    saved = meta["data"].get("datasets")
    if saved is not None and saved != datasets_meta:
      logging.warning("resuming with other data than the checkpoint's (%s, now %s): the batches "
                      "from here on differ from the original run's", saved, datasets_meta)
  elif config.init_from:
    init_from = open_run(config.init_from, "config.init_from")
    try:
      check_compatible(init_from.meta(init_from.latest_step())["model"], model_cfg,
                       config.init_from, ignore=("scan_layers",))
    except CheckpointError:
      init_from.close()
      raise
  return Start(ckpt if ckpt is not None else make(), latest, init_from)


def run_config(workdir):
  """A run's resolved config (<workdir>/config.json) as a ConfigDict, without the derived
  model (config.json's 'resolved_model')."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise CheckpointError(f"--workdir: {workdir!r} has no config.json; give the workdir of a "
                          "pretrain.train run")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config.pop("resolved_model", None)
  return ml_collections.ConfigDict(config)


def write_run_files(workdir, config, model_cfg, tok):
  """config.json (the resolved config, with the resolved model) and tokenizer.json: what
  run_config and `pretrain.evaluate` read back."""
  os.makedirs(workdir, exist_ok=True)
  resolved = dict(config.to_dict(), resolved_model=model_cfg.to_dict())
  tokenized.write_json(os.path.join(workdir, "config.json"), resolved)
  tokenized.write_atomic(os.path.join(workdir, "tokenizer.json"), tok.save)


def run_meta(model_cfg, tok_id, step, seed, datasets=None):
  """The 'meta' item of a checkpoint: the model, the tokenizer's identity, the data position
  (and the datasets' sizes and weights, when known)."""
  data = {"step": step, "seed": seed, "process_count": jax.process_count()}
  if datasets is not None:
    data["datasets"] = datasets
  return {"model": model_cfg.to_dict(), "tokenizer": tok_id, "data": data}


def check_step(ckpt, step):
  """`step` if `ckpt` holds it; else a one-line error listing the steps it does hold."""
  steps = ckpt.all_steps()
  if step not in steps:
    raise CheckpointError(f"--step: no checkpoint at step {step} in {ckpt.directory}; it holds "
                          f"steps {', '.join(map(str, steps))}")
  return step


def open_run(path, field):
  """A read-only Checkpointer over a run's workdir or its checkpoints directory; an error
  naming `field` when it holds no checkpoint."""
  source = path
  if os.path.isdir(os.path.join(source, "checkpoints")):  # a run's workdir
    source = os.path.join(source, "checkpoints")
  if not os.path.isdir(source):
    raise CheckpointError(f"{field}: no checkpoints in {path!r}; give a run's workdir or its "
                          "checkpoints directory")
  ckpt = Checkpointer(source, read_only=True)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise CheckpointError(f"{field}: no checkpoint in {path!r}; give a run's workdir or its "
                          "checkpoints directory (train first)")
  return ckpt


def restore_or_init(start, steps, objective, model_cfg):
  """The state to train from: restored (resume), initialised with init_from's parameters, or
  freshly initialised."""
  if start.latest is not None:
    return start.ckpt.restore(start.latest, steps.abstract_state)
  state = steps.init()
  if start.init_from is None:
    return state
  params = restore_params(start.init_from, start.init_from.latest_step(), steps, objective,
                          model_cfg)
  return dict(state, params=params)
