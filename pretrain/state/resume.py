"""Where a run starts, decided before anything compiles: the workdir's latest usable checkpoint
(everything: parameters, optimizer state, step, RNG key, data position), else
config.init_from (parameters only), else a fresh initialisation. `find_start` decides;
`restore_or_init` returns the state and the start it found, unchanged otherwise.
"""

import dataclasses
import json
import os

import jax
import ml_collections

from models import model_config
from pretrain.ground import errors, storage
from pretrain.state import checkpointer, compatibility, run_files
from pretrain.training import optimizer


@dataclasses.dataclass
class Start:
  """Where a run starts (the resume order), decided and checked before anything compiles."""

  ckpt: checkpointer.Checkpointer  # <workdir>/checkpoints
  latest: int | None  # its latest step: resume from there
  init_from: (
    checkpointer.Checkpointer | None
  )  # else config.init_from's checkpoints: parameters only
  initialised: tuple = ()  # entries init_from lacks (a new task head): initialised

  def describe(self, total_steps: int) -> str:
    if self.latest is not None:
      return f"resumed from step {self.latest} of {total_steps}"
    source = (
      "initialised from scratch"
      if self.init_from is None
      else f"parameters from {self.init_from.directory} step {self.init_from.latest_step()}"
    )
    if self.initialised:
      source += f" (initialised fresh: {', '.join(self.initialised)})"
    return f"{source}; training for {total_steps} steps"

  def close(self):
    for ckpt in (self.ckpt, self.init_from):
      if ckpt is not None:
        ckpt.close()


def find_start(
  config: ml_collections.ConfigDict,
  workdir: str,
  model_cfg: model_config.ModelConfig,
  tok_id: str,
  datasets_meta: dict | None,
) -> Start:
  """Opens the run's checkpoints and decides the start: the workdir's latest checkpoint, else
  config.init_from, else scratch. Everything that can fail on a checkpoint fails here, before
  <workdir>/checkpoints is created."""
  directory = os.path.join(workdir, "checkpoints")
  make = lambda: checkpointer.Checkpointer(
    directory, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save
  )
  ckpt = make() if storage.isdir(directory) else None
  latest = ckpt.latest_step() if ckpt is not None else None
  init_from = None
  meta = _newest_readable_meta(ckpt) if latest is not None else None
  if ckpt is not None and meta is not None:  # (none readable: restore_usable says so)
    compatibility.check_compatible(meta["model"], model_cfg, ckpt.directory)
    if meta["tokenizer"] != tok_id:
      raise checkpointer.CheckpointError(
        f"config.data.tokenizer: the checkpoint in {ckpt.directory} was trained with another "
        "tokenizer; use the same data and tokenizer settings or a fresh workdir"
      )
    saved_opt, opt = meta.get("optimizer", "adamw"), optimizer.name(config.optimizer)
    if saved_opt != opt:
      raise checkpointer.CheckpointError(
        f"config.optimizer.name: the checkpoint in {ckpt.directory} holds {saved_opt!r} "
        f"state, not {opt!r}; use {saved_opt!r}, or a fresh workdir with "
        "config.init_from=<this run> (parameters only)"
      )
    saved = meta["data"].get("datasets")
    if saved is not None and saved != datasets_meta:
      errors.warn(
        f"resuming with other data than the checkpoint's ({saved}, now "
        f"{datasets_meta}): the batches from here on differ from the original run's"
      )
  elif latest is None and config.init_from:
    init_from = run_files.open_run(config.init_from, "config.init_from")
    try:
      saved = init_from.meta(init_from.require_latest_step())["model"]
      compatibility.check_family(saved, model_cfg, config)
      compatibility.check_compatible(
        saved, model_cfg, config.init_from, ignore=("scan_layers", "num_labels")
      )
    except checkpointer.CheckpointError:
      init_from.close()
      raise
  return Start(ckpt if ckpt is not None else make(), latest, init_from)


def _newest_readable_meta(ckpt):
  """The meta of the newest checkpoint whose meta can be read (a damaged one is judged, and set
  aside, when the state is restored)."""
  for step in reversed(ckpt.all_steps()):
    try:
      return ckpt.meta(step)
    except Exception:
      continue
  return None


def check_init_from_family(config: ml_collections.ConfigDict) -> None:
  """Before anything of config.init_from is used (its tokenizer first): an encoder task
  refuses a decoder's checkpoint, and the reverse, naming both (the most fundamental check)."""
  path = (
    os.path.join(run_files.run_dir(config.init_from), "config.json") if config.init_from else ""
  )
  if path and storage.isfile(path):
    saved = json.loads(storage.read_text(path)).get("resolved_model")
    if saved:
      compatibility.check_family(saved, config.model, config)


def restore_or_init(
  start: Start, steps, objective, model_cfg: model_config.ModelConfig
) -> tuple[Start, dict]:
  """(the start as found, the state to train from): restored (resume; from an older step where
  the latest is unusable), initialised with init_from's parameters (with the entries it lacks
  named), or freshly initialised. `start` itself is left as it was."""
  if start.latest is not None:
    latest, state = restore_usable(start.ckpt, start.latest, steps.abstract_state)
    return dataclasses.replace(start, latest=latest), state
  state = steps.init()
  if start.init_from is None:
    return start, state
  step = start.init_from.require_latest_step()
  keys = compatibility.loadable(
    compatibility.param_shapes(start.init_from, step), steps.abstract_state["params"]
  )
  initialised = tuple(k for k in state["params"] if k not in keys)
  params = compatibility.restore_params(start.init_from, step, steps, objective, model_cfg, keys)
  state = dict(state, params=dict(state["params"], **params))
  return dataclasses.replace(start, initialised=initialised), state


def restore_usable(ckpt, latest, abstract_state, warn=print):
  """(step, state) of the newest checkpoint up to `latest` that restores whole. A corrupt one
  is reported in one line and set aside (never deleted) once an older one is found good; when
  none is, nothing is moved and the error says what to do."""
  bad = []
  for step in reversed([s for s in ckpt.all_steps() if s <= latest]):
    try:
      state = ckpt.restore(step, abstract_state)
    except checkpointer.CorruptCheckpoint as e:
      bad.append(e)
      continue
    for unusable in bad:
      where = ckpt.set_aside(unusable.step)
      if jax.process_index() == 0:
        warn(
          f"warning: checkpoint step {unusable.step} in {ckpt.directory} is unusable "
          f"({unusable.reason}); "
          f"moved to {where}; resuming from step {step}"
        )
    return step, state
  found = "; ".join(f"step {e.step}: {e.reason}" for e in bad)
  raise checkpointer.CheckpointError(
    f"no usable checkpoint in {ckpt.directory} ({found}); nothing was moved or deleted: "
    "restore the files from a copy, or move the checkpoints directory aside to start over"
  )
