"""An analytic model of a train step's memory per device, to set beside the compiled figure.

The ahead-of-time check (pretrain/aot.py) compiles the step on fake CPU devices and reports
XLA:CPU's buffer assignment; that is the truth for a CPU, but XLA:CPU schedules for memory
differently from the TPU and GPU compilers. This model counts what a step must hold on an
accelerator, from the config alone:

- the train state (parameters in float32, the optimizer's moments), sharded as the mesh shards
  it, and the gradients (float32, sharded alike; a second copy accumulates microbatches);
- the activations the backward pass keeps, per layer, under the remat policy: everything
  (`none`), the matmul outputs (`dots`, `offload`) or the layer's input (`full`), for the
  microbatch's tokens on one device (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", Section 4, in our layers' terms);
- the largest transient on top: one layer's recomputed activations (under remat), the output
  logits (in the compute dtype, and in float32 with their gradient), or a layer's weights gathered for FSDP.

It is an estimate: XLA fuses and reuses buffers, so the model is pinned to the compiled
figure on small shapes where the two should agree (tests/pretrain/test_memory_model.py).
"""

import dataclasses

from models import layer_stack, layers, model_config

_F32 = 4


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Bytes per device of each part of a train step, and their peak."""

  state: int  # parameters and optimizer state
  gradients: int  # the gradient, and the microbatches' accumulator
  activations: int  # kept for the backward pass, every layer
  transient: int  # the largest buffer live on top of those

  @property
  def peak(self) -> int:
    return self.state + self.gradients + self.activations + self.transient


def _itemsize(dtype: str) -> int:
  return {"bfloat16": 2, "float16": 2, "float32": 4}[dtype]


def _mesh_ways(mesh: dict) -> tuple[int, int, int]:
  """(batch ways: data x fsdp, sequence ways, tensor ways) of a mesh's axis sizes."""
  return mesh.get("data", 1) * mesh.get("fsdp", 1), mesh.get("sequence", 1), mesh.get("tensor", 1)


def kept_per_token(cfg: model_config.ModelConfig, remat: str, seq_len: int, tensor: int) -> float:
  """Bytes one layer keeps for its backward pass per token (its share under tensor ways)."""
  c = _itemsize(cfg.dtype)
  d, kv = cfg.d_model, cfg.num_kv_heads * cfg.head_dim
  hidden = cfg.d_ff * (2 if cfg.mlp in layers.GATED else 1)
  q = cfg.num_heads * cfg.head_dim
  if remat == "full":
    return d * c / tensor  # the layer's input, its width split over the tensor ways
  matmuls = (q + 2 * kv + d) * c / tensor + (hidden + d) * c / tensor
  if remat in ("dots", "offload"):
    return matmuls
  # none: also the norms' inputs and outputs, the residual stream, the activation's output and
  # the attention probabilities, [heads, keys] per token in float32
  norms = 4 * d * c
  activation = cfg.d_ff * c / tensor
  probs = cfg.num_heads * seq_len * _F32 / tensor
  return matmuls + norms + activation + probs


def estimate(
  cfg: model_config.ModelConfig,
  *,
  state_bytes: int,
  n_params: int,
  mesh: dict,
  batch_size: int,
  seq_len: int,
  grad_accum: int = 1,
  remat: str = "none",
  output_positions: int | None = None,
) -> Estimate:
  """The estimate for a resolved model on a mesh ({'data': 2, 'fsdp': 4, ...}): `state_bytes`
  per device as the shardings give it (pretrain/aot.py), a global batch of `batch_size`
  sequences of `seq_len`, in `grad_accum` microbatches. `output_positions`: positions per
  sequence with output logits (a masked LM's predictions; default every position)."""
  batch_ways, seq_ways, tensor = _mesh_ways(mesh)
  shards = max(1, mesh.get("fsdp", 1) * tensor)
  gradients = n_params * _F32 // shards * (2 if grad_accum > 1 else 1)
  rows = max(1.0, batch_size / grad_accum / batch_ways)
  tokens = rows * seq_len / seq_ways
  layer = kept_per_token(cfg, remat, seq_len, tensor)
  activations = int(cfg.num_layers * tokens * layer)
  outputs = rows * (output_positions or seq_len) / seq_ways
  # the logits in the compute dtype, their float32 copy for the loss, and its gradient
  logits = int(outputs * cfg.vocab_size * (_itemsize(cfg.dtype) + 2 * _F32) / tensor)
  recompute = int(tokens * kept_per_token(cfg, "none", seq_len, tensor)) if remat != "none" else 0
  gathered = 2 * n_params * _itemsize(cfg.dtype) // max(1, cfg.num_layers * tensor)
  transient = max(logits, recompute, gathered if mesh.get("fsdp", 1) > 1 else 0)
  return Estimate(state_bytes, gradients, activations, transient)


def disagreement(analytic: int, compiled: int) -> float:
  """How far apart the two figures are: |a - c| / c."""
  return abs(analytic - compiled) / max(1, compiled)


def for_config(config, cfg: model_config.ModelConfig, *, state_bytes: int, n_params: int, mesh):
  """`estimate` for an experiment config (its batch, remat and objective's outputs)."""
  return estimate(
    cfg,
    state_bytes=state_bytes,
    n_params=n_params,
    mesh=mesh,
    batch_size=config.batch.size,
    seq_len=config.batch.seq_len,
    grad_accum=config.batch.grad_accum,
    remat=layer_stack.remat_in_effect(config.model.remat),
    output_positions=config.data.mlm.max_predictions if cfg.is_encoder else None,
  )


# Optimizer state per parameter beside the float32 parameter itself, in float32 words: AdamW's
# and Muon's second moment (Muon keeps Adam's for the non-matrix parameters; counted for all);
# Lion has none; Adafactor's factored moments are a vanishing share.
_SECOND_MOMENT = {"adamw": 1, "muon": 1, "lion": 0, "adafactor": 0}


def state_bytes(optimizer, n_params: int, shards: int) -> int:
  """Parameters and optimizer state per device, sharded `shards` ways (fsdp x tensor), from
  the config alone (the compile gives the exact figure, shard by shard)."""
  first = 0 if optimizer.name == "adafactor" else _itemsize(optimizer.mu_dtype or "float32")
  per_param = _F32 + first + _F32 * _SECOND_MOMENT.get(optimizer.name, 1)
  return n_params * per_param // max(1, shards)
