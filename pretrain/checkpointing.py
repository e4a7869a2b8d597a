"""orbax checkpoints: everything that makes a run resumable.

A checkpoint at step s holds 'state' (params, optimizer state, step, RNG key; restored straight
into the current mesh's shardings) and 'meta' (JSON: the model config, the tokenizer's identity
and the data position). Saves are asynchronous, every `config.checkpoint.every` steps and at the
end, keeping the last `config.checkpoint.keep`. A save in flight is written to a temporary
directory and renamed when complete, so a crash never leaves a half checkpoint as "latest".

Resume order (see pretrain/trainer.py): <workdir>/checkpoints, then config.init_from
(parameters only), then a fresh initialisation.
"""
import os

import jax
import orbax.checkpoint as ocp


class CheckpointError(ValueError):
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


SHAPE_FIELDS = ("vocab_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "d_model",
                "d_ff", "max_len", "position", "norm", "mlp", "use_bias", "tie_embeddings",
                "scan_layers")


def check_compatible(saved_model, model, where):
  """Errors (one line, naming the field) if a checkpoint's model differs in any shape field."""
  for field in SHAPE_FIELDS:
    if field in saved_model and saved_model[field] != model[field]:
      raise CheckpointError(
          f"config.model.{field}: the checkpoint in {where} has {field}={saved_model[field]!r} but "
          f"the config has {model[field]!r}; match the checkpoint's model or use a fresh workdir")


def abstract_like(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)
