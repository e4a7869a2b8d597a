"""orbax checkpoints, checked: a Checkpointer saves a step's state with its meta and the
checksums of its arrays, and restores it (whole, or the parameters alone) only if they match.

A checkpoint at step s holds 'state' (params, optimizer state, step, RNG key; restored straight
into the current mesh's shardings) and 'meta' (JSON: the model config, the tokenizer's identity
and the data position). A save in flight is written to a temporary directory and renamed when
complete, so a crash never leaves a half checkpoint as "latest".
"""

import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from pretrain.ground import errors, storage
from pretrain.state import checksums


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


_WHOLE_REPLICAS: list = []  # the handler registered by _save_whole_replicas_on_cpu, once


def _save_whole_replicas_on_cpu():
  """In one CPU process, orbax saves each replicated array whole, from one replica. Its
  replica-parallel save (each replica writes a slice) serves devices with memories of their own,
  or several hosts: in one CPU process every replica is in the same memory, and the slices only
  cost a compiled program per device and shape at the first save, and copies
  (benchmarks/RESULTS.md). Orbax makes the same choice for GPUs."""
  if jax.default_backend() != "cpu" or jax.process_count() > 1 or _WHOLE_REPLICAS:
    return
  # The registered handler's array-metadata store is kept: orbax has no public accessor for it
  # (ArrayHandler._array_metadata_store), nor a public way to turn replica-parallel saving off
  # but registering a new handler.
  registered = ocp.type_handlers.get_type_handler(jax.Array)
  whole = ocp.type_handlers.ArrayHandler(
    use_replica_parallel=False, array_metadata_store=registered._array_metadata_store
  )
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # (orbax warns of any handler replaced)
  try:
    ocp.type_handlers.register_type_handler(jax.Array, whole, override=True)
  finally:
    logging.set_verbosity(verbosity)
  _WHOLE_REPLICAS.append(whole)


class Checkpointer:
  def __init__(
    self, directory: str, *, keep: int = 1, async_save: bool = False, read_only: bool = False
  ):
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

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def require_latest_step(self) -> int:
    """The latest step, of a directory known to hold a checkpoint (run_files.open_run's)."""
    step = self.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    return step

  def all_steps(self, reload: bool = False) -> list[int]:
    """The steps of complete checkpoints, oldest first (`reload`: look again on disk, for
    checkpoints another process has finished since)."""
    if reload:
      self.manager.reload()
    return sorted(self.manager.all_steps())

  def save(self, step: int, state: dict, meta: dict, *, force: bool = False) -> bool:
    """Saves `state` with `meta` and the checksums of its arrays (checked at restore)."""
    meta = dict(meta, checksums=checksums.of(state))
    return self.manager.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
      force=force,
    )

  def meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, abstract_state: dict) -> dict:
    """Restores 'state' into the shardings of `abstract_state` (ShapeDtypeStructs), checked
    against the checksums saved with it; CorruptCheckpoint if it cannot be used."""
    return self.verified(
      step,
      lambda: self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
      )["state"],
    )

  def restore_params(self, step: int, abstract_params: dict) -> dict:
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

  def set_aside(self, step: int) -> str:
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

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
