"""The MFU formulas (pretrain/training/metrics.py) against FLOPs counted by hand and by XLA; what the
metric writers import."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import nnx

from configs import bert, gpt
from models import cpu_kernels, decoder, encoder, model_config
from pretrain.objectives import pretraining, registry
from pretrain.training import metrics
from tests.helpers import REPO

MODERN = dict(
  position="rope", norm="rmsnorm", mlp="swiglu", num_kv_heads=2, head_dim=32, use_bias=False
)


def _gpt(vocab=128, seq_len=32, **model):
  config = gpt.get_config("smoke")
  config.model.update(num_layers=2, num_heads=4, d_model=64, max_len=seq_len, scan_layers=False)
  config.model.update(model)
  config.batch.seq_len = seq_len
  return config, model_config.resolve(config.model, vocab)


def _bert(recipe, vocab=128, seq_len=32, predictions=5, **model):
  config = bert.get_config(f"smoke,recipe={recipe}")
  config.model.update(num_layers=2, num_heads=4, d_model=64, max_len=seq_len, scan_layers=False)
  config.model.update(model)
  config.batch.seq_len = seq_len
  config.data.mlm.max_predictions = predictions
  return config, model_config.resolve(config.model, vocab)


def _block(cfg):
  """(weight-matrix parameters, bias and norm parameters) of one Transformer block."""
  d, h, kv, hd, ff = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_ff
  mlp_mats = 3 if cfg.mlp == "swiglu" else 2
  matrices = d * h * hd + 2 * d * kv * hd + h * hd * d + mlp_mats * d * ff
  norm = 2 * d if cfg.norm == "layernorm" else d
  biases = (h * hd + 2 * kv * hd + d + (mlp_mats - 1) * ff + d) if cfg.use_bias else 0
  return matrices, 2 * norm + biases


def _attention_matmuls(cfg, t):
  """QK^T and AV per token and layer: 2 FLOPs per multiply-add against all t keys."""
  return 2 * 2 * t * cfg.num_heads * cfg.head_dim


def _decoder_by_hand(cfg, t):
  """(matmul FLOPs of one forward pass per token, bias + norm parameters, parameters without
  the position table) of a tied-embedding decoder."""
  matrices, vectors = _block(cfg)
  norm = 2 * cfg.d_model if cfg.norm == "layernorm" else cfg.d_model
  forward = (
    cfg.num_layers * (2 * matrices + _attention_matmuls(cfg, t)) + 2 * cfg.d_model * cfg.vocab_size
  )  # the tied output matmul
  vectors = cfg.num_layers * vectors + norm  # + the final norm
  return forward, vectors, cfg.vocab_size * cfg.d_model + cfg.num_layers * matrices + vectors


def _encoder_by_hand(cfg, t, p):
  """The same for the encoder with its MLM head (dense d x d, tied decoder d x V) at p masked
  positions per sequence; the pooler and NSP classifier run once per sequence and are not
  counted as matmuls."""
  d, v = cfg.d_model, cfg.vocab_size
  matrices, vectors = _block(cfg)
  norm = 2 * d if cfg.norm == "layernorm" else d
  forward = (
    cfg.num_layers * (2 * matrices + _attention_matmuls(cfg, t)) + (2 * d * d + 2 * d * v) * p / t
  )
  # embedding norm, pooler bias, MLM dense bias + norm + output bias, NSP classifier
  vectors = (
    cfg.num_layers * vectors
    + norm
    + (norm if cfg.pre_norm else 0)
    + d
    + (d if cfg.use_bias else 0)  # the MLM dense's bias (none in a bias-free ModernBERT)
    + norm
    + v
    + (2 * d + 2 if cfg.nsp_head else 0)
  )
  params = (
    v * d
    + cfg.type_vocab_size * d
    + cfg.num_layers * matrices
    + 2 * d * d  # pooler, MLM
    + vectors
  )
  return forward, vectors, params


@pytest.mark.parametrize("model", [{}, MODERN], ids=["gpt2", "modern"])
def test_gpt_formula_is_three_times_the_forward_matmuls(model):
  config, cfg = _gpt(**model)
  t = config.batch.seq_len
  forward, vectors, params = _decoder_by_hand(cfg, t)
  n = decoder.count_params(cfg)
  assert n == params
  # 2 FLOPs per multiply-add; the backward pass is twice the forward (input and weight
  # gradients); 6N also charges each bias and norm scale 6 FLOPs per token
  expected = 3 * forward + 6 * vectors
  assert metrics.flops_per_token(cfg, n, t) == expected
  assert registry.get("causal_lm").flops_per_token(cfg, n, config) == expected
  # untied: the head is a second V x d matrix (a matmul), the input table a lookup (none)
  untied = model_config.resolve(
    ml_collections.ConfigDict(dict(config.model.to_dict(), tie_embeddings=False)), 128
  )
  n_untied = decoder.count_params(untied)
  assert n_untied == n + cfg.vocab_size * cfg.d_model
  assert metrics.flops_per_token(untied, n_untied, t) == expected


@pytest.mark.parametrize(
  "recipe,model",
  [("bert", {}), ("roberta", {}), ("roberta", dict(MODERN, mlp="gelu", pre_norm=True))],
  ids=["bert", "roberta", "roberta-modern"],
)
def test_mlm_formula_is_three_times_the_forward_matmuls(recipe, model):
  config, cfg = _bert(recipe, **model)
  t, p = config.batch.seq_len, config.data.mlm.max_predictions
  forward, vectors, params = _encoder_by_hand(cfg, t, p)
  n = encoder.count_params(cfg)
  assert n == params
  expected = 3 * forward + 6 * vectors
  assert metrics.mlm_flops_per_token(cfg, n, t, p) == pytest.approx(expected, rel=1e-12)
  assert registry.get(config.objective).flops_per_token(cfg, n, config) == pytest.approx(
    expected, rel=1e-12
  )


def _xla_flops(fn, *args):
  return jax.jit(fn).lower(*args).compile().cost_analysis()["flops"]


# XLA counts every op of the unscanned program (a scanned stack's body would count once): the
# matmuls at 2 FLOPs per multiply-add and, besides, the elementwise work the formula leaves out
# (norms, GELU, softmax, residual adds, cross-entropy and their gradients), a few percent at
# this width (measured: +3-4% GPT, +5% BERT). So the formula must be at most XLA's count and
# within 8% of it. With T = 2d, attention's QK^T and AV are 20-30% of the formula: halving
# them for the causal mask, dropping the output matmul or the backward pass would fall outside.
@pytest.mark.parametrize("model", [{}, MODERN], ids=["gpt2", "modern"])
def test_gpt_formula_matches_xla_cost_analysis(model, monkeypatch):
  # The formula counts causal attention whole, as MFU conventionally does; the CPU kernel
  # skips the masked blocks above the diagonal (cpu_kernels._CAUSAL_BLOCK), so here it runs whole.
  monkeypatch.setattr(cpu_kernels, "_CAUSAL_BLOCK", 128)
  config, cfg = _gpt(vocab=256, seq_len=128, **model)
  n, t, b = decoder.count_params(cfg), config.batch.seq_len, 2
  graphdef, params = nnx.split(decoder.Decoder(cfg, rngs=nnx.Rngs(0)))
  batch = pretraining.causal_lm_fake_batch(config, b, cfg.vocab_size)

  def loss(params, batch):
    return pretraining.causal_lm_loss(nnx.merge(graphdef, params), batch, None, {"tokens": b * t})[
      0
    ]

  per_token = _xla_flops(jax.grad(loss), params, batch) / (b * t)
  formula = metrics.flops_per_token(cfg, n, t)
  assert formula <= per_token <= 1.08 * formula, per_token / formula


@pytest.mark.parametrize("recipe", ["bert", "roberta"])
def test_mlm_formula_matches_xla_cost_analysis(recipe):
  # tanh GELU: XLA expands the exact GELU's erf into a polynomial, elementwise work that adds
  # another 3% here
  config, cfg = _bert(recipe, vocab=256, seq_len=128, predictions=20, gelu_approximate=True)
  objective = registry.get(config.objective)
  n, t, b = encoder.count_params(cfg), config.batch.seq_len, 2
  graphdef, params = nnx.split(encoder.Encoder(cfg, rngs=nnx.Rngs(0)))
  batch = {k: jnp.asarray(v) for k, v in objective.fake_batch(config, b, cfg.vocab_size).items()}
  assert ("nsp_labels" in batch) == (recipe == "bert")

  def loss(params, batch):
    return objective.loss(nnx.merge(graphdef, params), batch, None, objective.denominators(batch))[
      0
    ]

  per_token = _xla_flops(jax.grad(loss), params, batch) / (b * t)
  formula = objective.flops_per_token(cfg, n, config)
  assert formula <= per_token <= 1.08 * formula, per_token / formula


def test_the_cpu_matmul_peak_is_measured_once_per_machine(tmp_path, monkeypatch):
  """MFU on CPU divides by a peak measured once and cached by machine (so runs compare); a
  benchmark's remeasure keeps the higher value, as a busy machine only measures low."""
  monkeypatch.setenv("PRETRAIN_CACHE_DIR", str(tmp_path))
  first = metrics.cached_matmul_peak()
  table = json.loads((tmp_path / "matmul_peak.json").read_text())
  assert list(table.values()) == [first] and first > 1e9
  assert "cores" in next(iter(table)) and metrics.peak_flops() == (
    first,
    "measured f32 matmul, cached per machine",
  )
  (tmp_path / "matmul_peak.json").write_text(json.dumps({k: 1e15 for k in table}))
  assert metrics.cached_matmul_peak() == 1e15  # read back, not measured again
  assert metrics.cached_matmul_peak(remeasure=True) == 1e15  # the higher one stays


def test_tensorboard_events_are_written_without_importing_torch_or_cloud_clients(tmp_path):
  """tensorboardX would import torch, boto3 and google-cloud-storage where installed (seconds
  of every run's start-up); the writer imports it without them, in a process of its own."""
  probe = (
    "import sys, glob\n"
    "from pretrain.training import metrics\n"
    f"writer = metrics.Writer({str(tmp_path)!r})\n"
    "writer.write(3, {'loss': 1.5}, prefix='train/')\n"
    "writer.close()\n"
    "skipped = ('torch', 'boto3', 'google.cloud.storage')\n"
    "print(sorted(m for m in skipped if m in sys.modules))\n"
    f"print(len(glob.glob({str(tmp_path / 'tensorboard' / '*tfevents*')!r})))\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert out.returncode == 0, out.stderr
  assert out.stdout.split("\n")[:2] == ["[]", "1"]
  assert '"train/loss": 1.5' in (tmp_path / "metrics.jsonl").read_text()
