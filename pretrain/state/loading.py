"""A run's checkpoint for inference and conversion: its model config and parameters on one
device, and the model holding them.
"""

from collections.abc import Callable

import jax
import ml_collections
import tokenizers
from flax import nnx

from models import model_config
from pretrain.objectives import objective as objective_lib
from pretrain.objectives import registry
from pretrain.state import checkpointer, run_files


def load_params(
  workdir: str, step: int | None = None, check: Callable | None = None
) -> tuple[model_config.ModelConfig, dict, ml_collections.ConfigDict, int]:
  """(resolved model, parameters in the saved layout on one device, run config, step) of a
  run's checkpoint (the latest by default), for inference and conversion; `check(config,
  model)` runs before any array is read."""
  config = run_files.run_config(workdir)
  ckpt = run_files.open_run(workdir, "--workdir")
  try:
    step = ckpt.require_latest_step() if step is None else run_files.check_step(ckpt, step)
    saved = ckpt.meta(step)["model"]
    m = model_config.resolve(saved, saved["vocab_size"])
    if check is not None:
      check(config, m)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    objective = registry.get(config.objective)
    shapes = objective_lib.abstract_params(objective, m)
    abstract = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), shapes
    )
    params = ckpt.restore_params(step, abstract)
  finally:
    ckpt.close()
  return m, params, config, step


def load_decoder(
  workdir: str, step: int | None = None, purpose: str = "generation"
) -> tuple[nnx.Module, model_config.ModelConfig, tokenizers.Tokenizer, int | None, int]:
  """(model, resolved model config, tokenizer, EOS id, step) of a GPT run's checkpoint (the
  latest by default), on one device; an encoder run, or a run without its tokenizer.json, is a
  one-line error."""

  def check(config, m):
    del m
    if config.objective != "causal_lm":
      raise checkpointer.CheckpointError(
        f"--workdir: {workdir!r} holds a {config.objective!r} run, an "
        f"encoder; {purpose} needs a decoder (causal_lm) checkpoint"
      )

  m, params, config, step = load_params(workdir, step, check)
  tok = run_files.run_tokenizer(workdir)
  if tok is None:
    raise checkpointer.CheckpointError(
      f"--workdir: {workdir!r} has no tokenizer.json; give a run trained "
      "or imported by this version"
    )
  model = with_params(config.objective, m, params)
  return model, m, tok, tok.token_to_id(config.data.tokenizer.eos_token), step


def with_params(
  objective_name: str, model_cfg: model_config.ModelConfig, params: dict
) -> nnx.Module:
  """The model of `objective_name` for `model_cfg`, holding `params`."""
  # Built abstract (shapes only), then given the parameters: nothing is initialised twice.
  graphdef, state = objective_lib.abstract_split(registry.get(objective_name), model_cfg)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)
