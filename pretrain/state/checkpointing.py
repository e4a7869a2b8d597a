"""orbax checkpoints: everything that makes a run resumable.

A checkpoint at step s holds 'state' (params, optimizer state, step, RNG key; restored straight
into the current mesh's shardings) and 'meta' (JSON: the model config, the tokenizer's identity
and the data position). Saves are asynchronous, every `config.checkpoint.every` steps and at the
end, keeping the last `config.checkpoint.keep`. A save in flight is written to a temporary
directory and renamed when complete, so a crash never leaves a half checkpoint as "latest".

Resume order (see pretrain/training/trainer.py): <workdir>/checkpoints, then config.init_from
(parameters only), then a fresh initialisation.
"""

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx

from input_pipeline import tokenizer
from models import layer_stack, layers
from pretrain.devices import sharding
from pretrain.ground import errors, storage
from pretrain.objectives import registry
from pretrain.state import checksums
from pretrain.training import optimizer
from pretrain.training import steps as steps_lib


class CheckpointError(errors.UserError):
  pass


class CorruptCheckpoint(CheckpointError):
  """A checkpoint step that cannot be used: a file is damaged, truncated or missing."""

  def __init__(self, step, reason):
    super().__init__(
      f"checkpoint step {step} is unusable ({reason}); `python -m "
      "pretrain.checkpoints --workdir=RUN --verify` lists the good ones"
    )
    self.step, self.reason = step, reason


def _first_line(error):
  """The first line of the innermost cause of `error` (TensorStore's own words)."""
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _quiet_late_callbacks():
  """After a failed read, the reads still in flight end in orbax's closed event loop, and
  Python reports each as an unraisable error ('Event loop is closed', or the read's own
  exception). They say nothing the one-line warning has not said: drop them (the filter is
  installed once)."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_reads", False):
    return

  def hook(unraisable):
    late = str(unraisable.exc_value) == "Event loop is closed" or "_read_array" in repr(
      unraisable.object
    )
    if not late:
      previous(unraisable)

  hook.drops_late_reads = True
  sys.unraisablehook = hook


def _agree(ok):
  """Whether every process's `ok` holds (restores are judged by all processes together)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils

  return bool(multihost_utils.process_allgather(np.int32(ok)).all())


def _save_whole_replicas_on_cpu():
  """In one CPU process, orbax saves each replicated array whole, from one replica. Its
  replica-parallel save (each replica writes a slice) serves devices with memories of their own,
  or several hosts: in one CPU process every replica is in the same memory, and the slices only
  cost a compiled program per device and shape at the first save (80 for the tests' GPT on 8
  devices, +70% on a short run's time) and copies. Orbax makes the same choice for GPUs."""
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  if jax.default_backend() != "cpu" or jax.process_count() > 1 or not handler._use_replica_parallel:
    return
  whole = ocp.type_handlers.ArrayHandler(
    use_replica_parallel=False, array_metadata_store=handler._array_metadata_store
  )
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # (orbax warns of any handler replaced)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, whole, override=True)
  finally:
    logging.set_verbosity(verbosity)


class Checkpointer:
  def __init__(self, directory, *, keep=1, async_save=False, read_only=False):
    self.directory = storage.absolute(directory)
    _save_whole_replicas_on_cpu()
    # The trainer decides when to save (durations.every) and always passes force=True.
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      enable_async_checkpointing=async_save,
      create=not read_only,
      cleanup_tmp_directories=not read_only,
    )
    # A read-only manager (config.init_from) reads 'state' with the generic PyTree handler so
    # that it can restore the parameters alone.
    state_handler = ocp.PyTreeCheckpointHandler() if read_only else ocp.StandardCheckpointHandler()
    self.manager = ocp.CheckpointManager(
      self.directory,
      options=options,
      item_handlers={"state": state_handler, "meta": ocp.JsonCheckpointHandler()},
    )

  def latest_step(self):
    return self.manager.latest_step()

  def all_steps(self, reload=False):
    """The steps of complete checkpoints, oldest first (`reload`: look again on disk, for
    checkpoints another process has finished since)."""
    if reload:
      self.manager.reload()
    return sorted(self.manager.all_steps())

  def save(self, step, state, meta, *, force=False):
    """Saves `state` with `meta` and the checksums of its arrays (checked at restore)."""
    meta = dict(meta, checksums=checksums.of(state))
    return self.manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=force,
    )

  def meta(self, step):
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step, abstract_state):
    """Restores 'state' into the shardings of `abstract_state` (ShapeDtypeStructs), checked
    against the checksums saved with it; CorruptCheckpoint if it cannot be used."""
    return self.verified(
      step,
      lambda: self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
      )["state"],
    )

  def restore_params(self, step, abstract_params):
    """Restores only state['params'] (for config.init_from), into the given shardings."""
    item = {"params": abstract_params}
    restore = lambda: self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
          item=item,
          partial_restore=True,
          restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        )
      ),
    )["state"]["params"]
    return self.verified(step, restore, prefix="params/")

  def saved_shapes(self, step):
    """The saved state's shapes and dtypes (ShapeDtypeStructs) on this process's first device."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
      self.manager.item_metadata(step)["state"],
    )

  def read_as_saved(self, step):
    """The saved state, unchecked, on one device in the saved containers (dicts and lists
    where the optimizer had its own types): for tools that need no model, e.g. --verify."""
    item = self.saved_shapes(step)
    return self.manager.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item)
        )
      ),
    )["state"]

  def verified(self, step, restore, prefix=""):
    """Reads with `restore` (on every process), then compares the checksums (a collective)."""
    try:
      recorded, out, error = self.meta(step).get("checksums", {}), restore(), None
    except Exception as e:
      error = CorruptCheckpoint(step, "unreadable: " + _first_line(e))
      _quiet_late_callbacks()
    if not _agree(error is None):
      raise error or CorruptCheckpoint(step, "unreadable on another process")
    bad = checksums.mismatches(out, recorded, prefix)
    if bad:
      more = f" and {len(bad) - 1} more arrays" if len(bad) > 1 else ""
      raise CorruptCheckpoint(step, f"checksum mismatch in {prefix}{bad[0]}{more}")
    return out

  def set_aside(self, step):
    """Moves a corrupt step out of the way, to <workdir>/checkpoints-corrupt/<step> (kept for
    inspection, never deleted); returns where."""
    target = os.path.join(
      os.path.dirname(self.directory), os.path.basename(self.directory) + "-corrupt", str(step)
    )
    while storage.exists(target):
      target += "+"
    if jax.process_index() == 0:
      storage.move_dir(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices(f"set aside {step}")
    self.manager.reload()
    return target

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


# Fields a user sets come before the ones derived from them (d_model before head_dim), so an
# error names the field that was changed.
SHAPE_FIELDS = (
  "vocab_size",
  "num_layers",
  "d_model",
  "num_heads",
  "num_kv_heads",
  "head_dim",
  "d_ff",
  "max_len",
  "position",
  "norm",
  "mlp",
  "use_bias",
  "tie_embeddings",
  "qk_norm",
  "scan_layers",
  "num_labels",
)
# Values of a shape field that give the same parameters: an ungated MLP's activation. The
# other switches (logit_softcap, zero_init_proj, z_loss, dropout, ...) change no shapes, so a
# run may resume or start from a checkpoint with them changed.
SAME_SHAPES = {"mlp": {"relu2": "gelu"}}
# What a fine-tuning run keeps of its own when it takes the model of config.init_from
# (config.model.size='from_init'): the task head and how the model runs, not its shape.
OWN_FIELDS = (
  "num_labels",
  "dropout",
  "scan_layers",
  "remat",
  "dtype",
  "param_dtype",
  "attention",
  "nsp_head",
)


def check_compatible(saved_model, model, where, ignore=()):
  """Errors (one line, naming the field) if a checkpoint's model differs in any shape field
  (but those in `ignore`)."""

  def value(field, m):
    return layers.switch(m, field) if field in layers.SWITCH_DEFAULTS else m.get(field)

  def shapes_of(field, m):
    return SAME_SHAPES.get(field, {}).get(value(field, m), value(field, m))

  for field in SHAPE_FIELDS:
    if field in ignore or (field not in saved_model and field not in layers.SWITCH_DEFAULTS):
      continue
    if shapes_of(field, saved_model) != shapes_of(field, model):
      saved = value(field, saved_model)
      raise CheckpointError(
        f"config.model.{field}: the checkpoint in {where} has {field}={saved!r} but "
        f"the config has {value(field, model)!r}; match the checkpoint's model or use a fresh workdir"
      )


def _leaf_shapes(tree):
  """{path: shape} of a tree of arrays (or of their metadata)."""
  return {
    jax.tree_util.keystr(p): tuple(v.shape)
    for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def param_shapes(ckpt, step):
  """{top-level parameter entry: {path: shape}} of a checkpoint, read from its metadata."""
  tree = ckpt.manager.item_metadata(step)["state"]["params"]
  return {k: _leaf_shapes(sub) for k, sub in tree.items()}


def restore_params(ckpt, step, steps, objective, model_cfg, keys=None):
  """The parameters of checkpoint `step`, in the shardings of `steps` (any mesh), converted
  from the checkpoint's layer layout (scanned or not) to `model_cfg`'s. `keys`: only these
  top-level entries (a fine-tuning model's backbone, from a pretraining checkpoint)."""
  saved = ckpt.meta(step)["model"]
  check_compatible(saved, model_cfg, ckpt.directory, ignore=("scan_layers", "num_labels"))
  scan = saved.get("scan_layers", model_cfg.scan_layers)
  pick = (lambda tree: tree) if keys is None else (lambda tree: {k: tree[k] for k in keys})
  target = pick(steps.abstract_state["params"])
  if scan == model_cfg.scan_layers:
    return ckpt.restore_params(step, target)
  saved_cfg = ml_collections.ConfigDict(dict(model_cfg.to_dict(), scan_layers=scan))
  _, logical = steps_lib.model_logical_specs(objective, saved_cfg)
  shapes = jax.eval_shape(
    lambda: steps_lib.init_params(objective, saved_cfg, jax.random.PRNGKey(0))
  )
  shardings = sharding.tree_shardings(logical, steps.mesh, steps.rules)
  abstract = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), pick(shapes), pick(shardings)
  )
  restored = ckpt.restore_params(step, abstract)
  convert = functools.partial(layer_stack.to_layout, scan=model_cfg.scan_layers)
  return jax.jit(convert, out_shardings=pick(steps.state_shardings["params"]))(restored)


@dataclasses.dataclass
class Start:
  """Where a run starts (the resume order), decided and checked before anything compiles."""

  ckpt: Checkpointer  # <workdir>/checkpoints
  latest: int | None  # its latest step: resume from there
  init_from: Checkpointer | None  # else config.init_from's checkpoints: parameters only
  initialised: tuple = ()  # entries init_from lacks (a new task head): initialised

  def describe(self, total_steps):
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


def find_start(config, workdir, model_cfg, tok_id, datasets_meta):
  """Opens the run's checkpoints and decides the start: the workdir's latest checkpoint, else
  config.init_from, else scratch. Everything that can fail on a checkpoint fails here, before
  <workdir>/checkpoints is created."""
  directory = os.path.join(workdir, "checkpoints")
  make = lambda: Checkpointer(
    directory, keep=config.checkpoint.keep, async_save=config.checkpoint.async_save
  )
  ckpt = make() if storage.isdir(directory) else None
  latest = ckpt.latest_step() if ckpt is not None else None
  init_from = None
  meta = _newest_readable_meta(ckpt) if latest is not None else None
  if meta is not None:  # (none readable: restore_usable says so)
    check_compatible(meta["model"], model_cfg, ckpt.directory)
    if meta["tokenizer"] != tok_id:
      raise CheckpointError(
        f"config.data.tokenizer: the checkpoint in {ckpt.directory} was trained with another "
        "tokenizer; use the same data and tokenizer settings or a fresh workdir"
      )
    saved_opt, opt = meta.get("optimizer", "adamw"), optimizer.name(config.optimizer)
    if saved_opt != opt:
      raise CheckpointError(
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
    init_from = open_run(config.init_from, "config.init_from")
    try:
      saved = init_from.meta(init_from.latest_step())["model"]
      _check_family(saved, model_cfg, config)
      check_compatible(saved, model_cfg, config.init_from, ignore=("scan_layers", "num_labels"))
    except CheckpointError:
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


def _family(model):
  return "an encoder (BERT)" if "type_vocab_size" in model else "a decoder (GPT)"


def _check_family(saved, model_cfg, config):
  if _family(saved) != _family(model_cfg):
    raise CheckpointError(
      f"config.init_from: {config.init_from!r} holds {_family(saved)} checkpoint, but "
      f"config.objective={config.objective!r} trains {_family(model_cfg)}; give a checkpoint "
      "of the same kind of model"
    )


def check_init_from_family(config):
  """Before anything of config.init_from is used (its tokenizer first): an encoder task
  refuses a decoder's checkpoint, and the reverse, naming both (the most fundamental check)."""
  path = os.path.join(run_dir(config.init_from), "config.json") if config.init_from else ""
  if path and storage.isfile(path):
    saved = json.loads(storage.read_text(path)).get("resolved_model")
    if saved:
      _check_family(saved, config.model, config)


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
    raise CheckpointError(
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


def run_dir(path):
  """A run's workdir, given it or its checkpoints directory."""
  path = path.rstrip("/")
  return os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path


def run_tokenizer(path):
  """The tokenizer a run trained with (<workdir>/tokenizer.json), or None for older runs."""
  file = os.path.join(run_dir(path), "tokenizer.json")
  return tokenizer.from_str(storage.read_text(file)) if storage.isfile(file) else None


def inherit_model(config):
  """`config`, or a copy whose model is config.init_from's (the run's resolved model in its
  config.json) when config.model.size is 'from_init', keeping OWN_FIELDS."""
  if config.model.size != "from_init":
    return config
  if not config.init_from:
    raise CheckpointError(
      "config.model.size: 'from_init' takes the model of config.init_from, "
      "which is empty; set config.init_from=RUN or give a size (size=base)"
    )
  path = os.path.join(run_dir(config.init_from), "config.json")
  if not storage.isfile(path):
    raise CheckpointError(
      f"config.init_from: {config.init_from!r} has no config.json to take "
      "the model from; give a run's workdir or a size (size=base)"
    )
  saved = json.loads(storage.read_text(path))["resolved_model"]
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in saved.items():
    if field in config.model and field not in OWN_FIELDS:
      config.model[field] = value
  return config


def run_config(workdir):
  """A run's resolved config (<workdir>/config.json) as a ConfigDict, without the derived
  model (config.json's 'resolved_model')."""
  storage.check(workdir, "--workdir")  # a bucket that is missing or out of reach: one line
  path = os.path.join(workdir, "config.json")
  if not storage.isfile(path):
    raise CheckpointError(
      f"--workdir: {workdir!r} has no config.json; give the workdir of a pretrain.train run"
    )
  config = json.loads(storage.read_text(path))
  config.pop("resolved_model", None)
  return ml_collections.ConfigDict(config)


def write_run_files(workdir, config, model_cfg, tok, total_steps=None):
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


def write_step_zero(workdir, config, model_cfg, params, tok):
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
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
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


def check_step(ckpt, step):
  """`step` if `ckpt` holds it; else a one-line error listing the steps it does hold."""
  steps = ckpt.all_steps()
  if step not in steps:
    raise CheckpointError(
      f"--step: no checkpoint at step {step} in {ckpt.directory}; it holds "
      f"steps {', '.join(map(str, steps))}"
    )
  return step


def open_run(path, field):
  """A read-only Checkpointer over a run's workdir or its checkpoints directory; an error
  naming `field` when it holds no checkpoint."""
  source = path
  storage.check(source, field)
  if storage.isdir(os.path.join(source, "checkpoints")):  # a run's workdir
    source = os.path.join(source, "checkpoints")
  if not storage.isdir(source):
    raise CheckpointError(
      f"{field}: no checkpoints in {path!r}; give a run's workdir or its checkpoints directory"
    )
  ckpt = Checkpointer(source, read_only=True)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise CheckpointError(
      f"{field}: no checkpoint in {path!r}; give a run's workdir or its "
      "checkpoints directory (train first)"
    )
  return ckpt


def load_params(workdir, step=None, check=None):
  """(resolved model, parameters in the saved layout on one device, run config, step) of a
  run's checkpoint (the latest by default), for inference and conversion; `check(config,
  model)` runs before any array is read."""
  config = run_config(workdir)
  ckpt = open_run(workdir, "--workdir")
  try:
    step = ckpt.latest_step() if step is None else check_step(ckpt, step)
    m = ml_collections.ConfigDict(ckpt.meta(step)["model"])
    if check is not None:
      check(config, m)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    objective = registry.get(config.objective)
    shapes = jax.eval_shape(lambda: steps_lib.init_params(objective, m, jax.random.PRNGKey(0)))
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), shapes
    )
    params = ckpt.restore_params(step, abstract)
  finally:
    ckpt.close()
  return m, params, config, step


def load_decoder(workdir, step=None, purpose="generation"):
  """(model, resolved model config, tokenizer, EOS id, step) of a GPT run's checkpoint (the
  latest by default), on one device; an encoder run, or a run without its tokenizer.json, is a
  one-line error."""

  def check(config, m):
    del m
    if config.objective != "causal_lm":
      raise CheckpointError(
        f"--workdir: {workdir!r} holds a {config.objective!r} run, an "
        f"encoder; {purpose} needs a decoder (causal_lm) checkpoint"
      )

  m, params, config, step = load_params(workdir, step, check)
  tok = run_tokenizer(workdir)
  if tok is None:
    raise CheckpointError(
      f"--workdir: {workdir!r} has no tokenizer.json; give a run trained "
      "or imported by this version"
    )
  model = with_params(config.objective, m, params)
  return model, m, tok, tok.token_to_id(config.data.tokenizer.eos_token), step


def with_params(objective_name, model_cfg, params):
  """The model of `objective_name` for `model_cfg`, holding `params`."""
  # Built abstract (shapes only), then given the parameters: nothing is initialised twice.
  graphdef, state = nnx.split(
    nnx.eval_shape(lambda: registry.get(objective_name).make_model(model_cfg, nnx.Rngs(0)))
  )
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def restore_or_init(start, steps, objective, model_cfg):
  """The state to train from: restored (resume), initialised with init_from's parameters, or
  freshly initialised."""
  if start.latest is not None:
    start.latest, state = restore_usable(start.ckpt, start.latest, steps.abstract_state)
    return state
  state = steps.init()
  if start.init_from is None:
    return state
  step = start.init_from.latest_step()
  keys = loadable(param_shapes(start.init_from, step), steps.abstract_state["params"])
  start.initialised = tuple(k for k in state["params"] if k not in keys)
  params = restore_params(start.init_from, step, steps, objective, model_cfg, keys)
  return dict(state, params=dict(state["params"], **params))


def restore_usable(ckpt, latest, abstract_state, warn=print):
  """(step, state) of the newest checkpoint up to `latest` that restores whole. A corrupt one
  is reported in one line and set aside (never deleted) once an older one is found good; when
  none is, nothing is moved and the error says what to do."""
  bad = []
  for step in reversed([s for s in ckpt.all_steps() if s <= latest]):
    try:
      state = ckpt.restore(step, abstract_state)
    except CorruptCheckpoint as e:
      bad.append(e)
      continue
    for e in bad:
      where = ckpt.set_aside(e.step)
      if jax.process_index() == 0:
        warn(
          f"warning: checkpoint step {e.step} in {ckpt.directory} is unusable ({e.reason}); "
          f"moved to {where}; resuming from step {step}"
        )
    return step, state
  found = "; ".join(f"step {e.step}: {e.reason}" for e in bad)
  raise CheckpointError(
    f"no usable checkpoint in {ckpt.directory} ({found}); nothing was moved or deleted: "
    "restore the files from a copy, or move the checkpoints directory aside to start over"
  )


def loadable(saved, target):
  """The entries of the parameter tree `target` that a checkpoint with entries `saved`
  ({entry: {path: shape}}) can fill: all that it has, but a task head of another shape (a
  new label set). The layers' entry is converted between layouts, so its shapes may differ."""
  return [
    key
    for key, sub in target.items()
    if key in saved and (key == layer_stack.BLOCKS or saved[key] == _leaf_shapes(sub))
  ]
