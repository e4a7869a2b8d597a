"""Config fuzzing: any value of the right type for any field of the GPT and BERT configs is
either accepted by the checks or refused with one line naming the field, never a traceback,
and nothing compiles; a table of invalid values is refused, field by field. (Values of the
wrong type are refused by ml_collections when the override is parsed: test_errors.py.)"""

import math

import pytest

from configs import bert, gpt
from pretrain.ground import errors
from pretrain.training import config_checks
from tests.helpers import COMPILES

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIGS = {"gpt": lambda: gpt.get_config("smoke"), "bert": lambda: bert.get_config("smoke")}
SKIP = ("mesh.rules", "data.mixture")  # structured values, checked by their own tests


def _leaves(node, prefix=""):
  out = []
  for key, value in node.items():
    path = f"{prefix}{key}"
    if path in SKIP:
      continue
    if hasattr(value, "items"):
      out += _leaves(value, path + ".")
    elif isinstance(value, (bool, int, float, str)):
      out.append((path, value))
  return out


def _values_like(value):
  if isinstance(value, bool):
    return st.booleans()
  if isinstance(value, int):
    return st.one_of(st.integers(-3, 3), st.integers(-(10**12), 10**12))
  if isinstance(value, float):
    return st.floats(allow_nan=True, allow_infinity=True)
  return st.one_of(st.text(max_size=10), st.sampled_from(["", "none", "float16", "gelu"]))


def _set(config, path, value):
  node, *parts = [config] + path.split(".")
  for part in parts[:-1]:
    node = node[part]
  node[parts[-1]] = value


def _check(config):
  COMPILES.clear()
  try:
    config_checks.check(config, num_devices=8)
  except errors.UserError as e:
    message = str(e)
    assert "\n" not in message and "config" in message, message
    return message
  finally:
    assert not COMPILES
  return None


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_value_is_accepted_or_refused_in_one_line(data):
  config = CONFIGS[data.draw(st.sampled_from(sorted(CONFIGS)))]()
  path, value = data.draw(st.sampled_from(_leaves(config)))
  _set(config, path, data.draw(_values_like(value)))
  _check(config)


INVALID = {
  "batch.size": [0, -8, 12],
  "batch.seq_len": [0, -1, 10**6],
  "batch.grad_accum": [0, 3],
  "batch.warmup_steps": [-1, 5],
  "batch.warmup_start": [-1, 10**6],
  "model.mlp": ["relu3"],
  "model.logit_softcap": [-1.0, math.nan],
  "model.z_loss": [-1e-4, math.nan],
  "model.scan_unroll": [-1],
  "optimizer.name": ["sgd"],
  "optimizer.lr_scale.embed": [-1.0, math.nan],
  "optimizer.lr_scale.scalar": [-0.5],
  "model.num_layers": [0, -1],
  "model.num_heads": [0, 3],
  "model.d_model": [0, -64],
  "model.num_kv_heads": [-1, 3],
  "model.dropout": [1.0, -0.1, math.nan],
  "model.dtype": ["float7", ""],
  "model.position": ["sinusoid"],
  "model.norm": ["batchnorm"],
  "optimizer.lr": [0.0, -1e-3, math.nan],
  "optimizer.min_lr": [-1.0, 1.0],
  "optimizer.schedule": ["cosinus"],
  "optimizer.b1": [1.0, -0.5],
  "optimizer.b2": [math.nan],
  "optimizer.warmup_steps": [-1],
  "optimizer.warmup_fraction": [1.0, -0.1],
  "optimizer.weight_decay": [-0.1, math.nan],
  "optimizer.grad_clip": [-1.0],
  "optimizer.mu_dtype": ["int8"],
  "train.eval_every": [-2],
  "train.eval_batches": [-1],
  "train.nan_policy": ["ignore"],
  "train.best_mode": ["up"],
  "train.peak_flops": [-1.0],
  "train.log_every": [-1],
  "train.stop_at_step": [-5],
  "checkpoint.keep": [0],
  "checkpoint.every": [-2],
  "mesh.fsdp": [3, 0],
  "mesh.data": [0, 3],
  "mesh.tensor": [-2],
  "objective": ["xyz"],
  "data.tokenizer.kind": ["sentencepiece"],
  "data.tokenizer.vocab_size": [0, -5],
  "data.prepare_pieces": [-1],
  "data.validation_fraction": [1.5, -0.1, math.nan],
  "data.mlm.mask_prob": [math.nan, 1e306, 0.0],
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_invalid_values_are_refused_naming_the_field(name):
  missed = []
  for path, values in INVALID.items():
    if path not in [p for p, _ in _leaves(CONFIGS[name]())]:
      continue  # (a BERT-only field)
    for value in values:
      config = CONFIGS[name]()
      _set(config, path, value)
      message = _check(config)
      if message is None:
        missed.append(f"{path}={value!r}")
  assert not missed, f"accepted: {', '.join(missed)}"
