"""What a checkpoint can be restored into: the model fields that fix parameter shapes, the
entries of a parameter tree a checkpoint can fill, and parameters restored into any layer
layout (scanned or not) and any mesh.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax

from models import layer_stack, model_config
from pretrain.devices import sharding
from pretrain.state import checkpointer
from pretrain.training import steps as steps_lib

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
  "type_vocab_size",
)


# Values of a shape field that give the same parameters: an ungated MLP's activation. The
# other switches (logit_softcap, zero_init_proj, z_loss, dropout, ...) change no shapes, so a
# run may resume or start from a checkpoint with them changed.
SAME_SHAPES = {"mlp": {"relu2": "gelu"}}


# What a fine-tuning run keeps of its own when it takes the model of config.init_from
# (config.model.size='from_init'): the task head and how the model runs, not its shape.
OWN_FIELDS = (
  "num_labels",
  "classifier_pooling",
  "dropout",
  "scan_layers",
  "remat",
  "dtype",
  "param_dtype",
  "attention",
  "nsp_head",
)


def check_compatible(
  saved_model: dict, model: model_config.ModelConfig, where: str, ignore: Sequence[str] = ()
) -> None:
  """Errors (one line, naming the field) if a checkpoint's model differs in any shape field
  (but those in `ignore`)."""

  saved_cfg = model_config.resolve(saved_model, saved_model.get("vocab_size", 0))

  def shapes_of(field, m):
    return SAME_SHAPES.get(field, {}).get(getattr(m, field), getattr(m, field))

  for field in SHAPE_FIELDS:
    # a field the checkpoint predates reads as its default; an encoder's own, as absent
    if field in ignore or (field not in saved_model and model_config.DEFAULTS[field] is None):
      continue
    if field == "max_len" and model.position == "rope" == saved_cfg.position:
      continue  # no position table: a longer context shapes nothing
    if shapes_of(field, saved_cfg) != shapes_of(field, model):
      saved = getattr(saved_cfg, field)
      raise checkpointer.CheckpointError(
        f"config.model.{field}: the checkpoint in {where} has {field}={saved!r} but "
        f"the config has {getattr(model, field)!r}; match the checkpoint's model or use a fresh workdir"
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


def restore_params(
  ckpt: checkpointer.Checkpointer,
  step: int,
  steps,
  objective,
  model_cfg: model_config.ModelConfig,
  keys: Sequence[str] | None = None,
) -> dict:
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
  saved_cfg = dataclasses.replace(model_cfg, scan_layers=scan)
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


def _family(model):
  """model: a ModelConfig, or a model section's fields (a checkpoint's, a config's)."""
  fields = model.to_dict() if isinstance(model, model_config.ModelConfig) else model
  return "an encoder (BERT)" if "type_vocab_size" in fields else "a decoder (GPT)"


def check_family(saved, model_cfg, config):
  if _family(saved) != _family(model_cfg):
    raise checkpointer.CheckpointError(
      f"config.init_from: {config.init_from!r} holds {_family(saved)} checkpoint, but "
      f"config.objective={config.objective!r} trains {_family(model_cfg)}; give a checkpoint "
      "of the same kind of model"
    )


def loadable(saved: dict, target: dict) -> list[str]:
  """The entries of the parameter tree `target` that a checkpoint with entries `saved`
  ({entry: {path: shape}}) can fill: all that it has, but a task head of another shape (a
  new label set). The layers' entry is converted between layouts, so its shapes may differ."""
  return [
    key
    for key, sub in target.items()
    if key in saved and (key == layer_stack.BLOCKS or saved[key] == _leaf_shapes(sub))
  ]
