"""Checks every config value before anything is read, built or compiled.

Each failure is one line that names the field and says how to fix it; the entry points turn
it into a non-zero exit.
"""

import importlib.util
import os

import jax.numpy as jnp

from input_pipeline import masking, tokenizer
from input_pipeline.corpora import mirror, sources
from models import model_config
from pretrain.devices import sharding
from pretrain.ground import errors, storage
from pretrain.objectives import registry
from pretrain.training import durations, optimizer


class ConfigError(errors.UserError):
  pass


def _require(ok, message):
  if not ok:
    raise ConfigError(message)


def check_model(m):
  _require(
    m.num_layers > 0 and m.num_heads > 0 and m.d_model > 0,
    "config.model: num_layers, num_heads and d_model must be positive",
  )
  _check_local_attention(m)
  _require(
    m.head_dim > 0 or m.d_model % m.num_heads == 0,
    f"config.model.num_heads: {m.num_heads} does not divide d_model={m.d_model}; "
    "change one or set config.model.head_dim",
  )
  kv = m.num_kv_heads or m.num_heads
  _require(
    kv > 0 and m.num_heads % kv == 0,
    f"config.model.num_kv_heads: {kv} must divide num_heads={m.num_heads}",
  )
  _require(
    m.position != "rope" or (m.head_dim or m.d_model // m.num_heads) % 2 == 0,
    "config.model.position: RoPE needs an even head_dim",
  )
  for field in model_config.OPTIONS:
    if m.get(field) is not None:  # (a decoder has no encoder fields)
      model_config.check_option(field, m[field])
  for field in ("dtype", "param_dtype"):
    try:
      floating = jnp.issubdtype(jnp.dtype(m[field]), jnp.floating)
    except (TypeError, ValueError, SyntaxError):  # what numpy raises for a bad name varies
      floating = False
    _require(
      floating,
      f"config.model.{field}: {m[field]!r} is not a floating dtype; use 'float32' or 'bfloat16'",
    )
  _require(0 <= m.dropout < 1, f"config.model.dropout: {m.dropout} must be in [0, 1)")
  _require(
    m.get("scan_unroll", 0) >= 0,
    f"config.model.scan_unroll: {m.get('scan_unroll', 0)} must be >= 0 (0: chosen "
    "by depth and remat)",
  )
  for field, meaning in (("logit_softcap", "0 turns capping off"), ("z_loss", "0 turns it off")):
    _require(
      m.get(field, model_config.DEFAULTS[field]) >= 0,
      f"config.model.{field}: {m.get(field, model_config.DEFAULTS[field])} must be >= 0 ({meaning})",
    )


def _check_local_attention(m):
  window, every = m.get("attention_window", 0), m.get("global_every", 1)
  _require(
    window >= 0 and every >= 0,
    "config.model.attention_window and global_every must be >= 0 (0: dense; 0: no global layer)",
  )
  _require(
    not window or every != 1,
    f"config.model.global_every: 1 makes every layer global, so attention_window={window} is "
    "unused; set global_every=2 (alternating), 3 (ModernBERT) or 0 (every layer local)",
  )


def _check_batch_ramp(b):
  warmup, start = b.get("warmup_steps", 0), b.get("warmup_start", 0)
  _require(warmup >= 0, f"config.batch.warmup_steps: {warmup} must be >= 0 (0: no ramp)")
  _require(
    0 <= start <= b.size,
    f"config.batch.warmup_start: {start} must be in [0, config.batch.size={b.size}] "
    "(0: one microbatch)",
  )
  _require(
    not warmup or b.grad_accum > 1,
    "config.batch.warmup_steps: the batch grows by whole microbatches; set "
    "config.batch.grad_accum > 1 (e.g. 8: from size/8 to size)",
  )


def check(config, num_devices, num_processes=1):
  """Validates `config` for a run on `num_devices` devices in `num_processes` processes."""
  check_model(config.model)
  _check_batch(config, num_devices, num_processes)
  _check_optimizer(config.batch, config.optimizer)
  _check_train(config.train, config.optimizer)
  _check_data_and_run(config)


def _check_batch(config, num_devices, num_processes):
  """The batch against the model, the mesh's data-parallel ways and the processes."""
  b = config.batch
  _require(
    b.size > 0 and b.seq_len > 0 and b.grad_accum > 0,
    "config.batch: size, seq_len and grad_accum must be positive",
  )
  _require(
    b.seq_len <= config.model.max_len,
    f"config.batch.seq_len: {b.seq_len} exceeds config.model.max_len={config.model.max_len}; "
    "lower seq_len or raise max_len",
  )
  shape = sharding.mesh_shape(config.mesh, num_devices)
  rules = [tuple(r) for r in config.mesh.rules]
  names = {r[0] for r in rules}
  _require("batch" in names, "config.mesh.rules: needs a rule for 'batch'")
  batch_axes = dict(rules)["batch"]
  batch_axes = (batch_axes,) if isinstance(batch_axes, str) else tuple(batch_axes or ())
  _require(
    all(a in shape for a in batch_axes),
    f"config.mesh.rules: 'batch' maps to unknown mesh axes {batch_axes}",
  )
  ways = 1
  for a in batch_axes:
    ways *= shape[a]
  _require(
    b.size % num_processes == 0,
    f"config.batch.size: {b.size} is not divisible by the {num_processes} processes",
  )
  _require(
    b.size % b.grad_accum == 0,
    f"config.batch.grad_accum: {b.grad_accum} does not divide config.batch.size={b.size}",
  )
  micro = b.size // b.grad_accum
  _require(
    micro % ways == 0,
    f"config.batch.size: the microbatch of {micro} sequences is not divisible by the "
    f"{ways} data-parallel ways ({' x '.join(batch_axes)}); use a multiple of {ways}",
  )
  _check_tensor_ways(config.model, shape["tensor"])


def _check_tensor_ways(m, tensor):
  """Tensor parallelism splits the heads and the MLP's hidden width."""
  heads, kv = m.num_heads, m.get("num_kv_heads", 0) or m.num_heads
  for field, n in (("num_heads", heads), ("num_kv_heads", kv), ("d_ff", m.get("d_ff", 0))):
    _require(
      n % tensor == 0,
      f"config.model.{field}: {n} is not divisible by config.mesh.tensor={tensor}; "
      "choose tensor ways that divide it",
    )


def _check_optimizer(b, opt):
  _check_batch_ramp(b)
  _require(
    opt.lr > 0 and 0 <= opt.min_lr <= opt.lr, "config.optimizer: need lr > 0 and 0 <= min_lr <= lr"
  )
  _require(
    opt.mu_dtype in ("", "float32", "bfloat16"),
    f"config.optimizer.mu_dtype: {opt.mu_dtype!r}; use '', 'float32' or 'bfloat16'",
  )
  optimizer.check(opt)
  _require(0 <= opt.b1 < 1 and 0 <= opt.b2 < 1, "config.optimizer: b1 and b2 must be in [0, 1)")
  _require(
    opt.warmup_steps >= 0 and opt.weight_decay >= 0 and opt.grad_clip >= 0,
    "config.optimizer: warmup_steps, weight_decay and grad_clip must be >= 0",
  )


def _check_train(t, opt):
  _require(
    t.total_steps > 0 or t.total_tokens > 0 or t.epochs > 0,
    "config.train: set total_steps, total_tokens or epochs to a positive number",
  )
  _require(durations.length_conflict(t) is None, durations.length_conflict(t))
  _require(
    opt.warmup_fraction >= 0 and opt.warmup_fraction < 1,
    "config.optimizer.warmup_fraction: must be in [0, 1)",
  )
  _require(
    0 < opt.get("decay_until", 1.0) <= 1,
    f"config.optimizer.decay_until: {opt.get('decay_until')} must be in (0, 1] (a share of the run)",
  )
  _require(
    t.nan_policy in ("stop", "skip"),
    f"config.train.nan_policy: {t.nan_policy!r}; use 'stop' or 'skip'",
  )
  _require(
    t.log_every >= 0 and t.stop_at_step >= 0 and t.peak_flops >= 0,
    "config.train: log_every, stop_at_step and peak_flops must be >= 0 (0: never / off / look up)",
  )


def _check_data_and_run(config):
  t = config.train
  _require(
    0 <= config.data.validation_fraction < 1,
    f"config.data.validation_fraction: {config.data.validation_fraction} must be in [0, 1)",
  )
  _require(
    t.best_mode in ("min", "max"), f"config.train.best_mode: {t.best_mode!r}; use 'min' or 'max'"
  )
  _require(
    t.eval_every >= -1 and config.checkpoint.every >= -1,
    "config.train.eval_every, config.checkpoint.every: -1 (each epoch), 0 or a step count",
  )
  _require(
    t.eval_batches >= 0,
    "config.train.eval_batches: must be >= 0 (0 evaluates the whole validation split)",
  )
  _require(config.checkpoint.keep > 0, "config.checkpoint.keep: must be at least 1")
  tokenizer.check_config(config.data.tokenizer)
  _require(
    config.data.prepare_pieces >= 0, "config.data.prepare_pieces: must be >= 0 (0: automatic)"
  )
  sources.named(config.data)  # the mixture's entries and weights
  known = registry.all_objectives()
  _require(
    config.objective in known,
    f"config.objective: unknown {config.objective!r}; choose one of {', '.join(known)}",
  )
  if config.objective in ("mlm", "mlm_nsp"):
    check_mlm(config)
  _require(
    not config.wandb.enabled or importlib.util.find_spec("wandb") is not None,
    "config.wandb.enabled: the wandb package is not installed; pip install wandb, or "
    "set config.wandb.enabled=False",
  )
  storage.check(config.init_from, "config.init_from")
  mirror.check(config.data)  # a gs:// data_dir or tokenized_dir: its bucket and credentials
  _require(
    not config.init_from or storage.isdir(config.init_from),
    f"config.init_from: {config.init_from!r} is not a directory; give a run's "
    "checkpoints directory or leave it empty",
  )


def check_workdir(workdir):
  """Proves that workdir can be written (it, or the nearest directory above it that exists)
  without creating anything: a run that fails validation leaves nothing behind. On object
  storage: that its bucket exists and credentials are at hand."""
  if storage.is_remote(workdir):
    storage.check(workdir, "--workdir")
    return
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(
      f"--workdir: {workdir!r} is not writable ({path} is not a writable "
      "directory); choose another directory"
    )


def check_mlm(config):
  mlm, seq_len = config.data.mlm, config.batch.seq_len
  _require(
    0 < mlm.mask_prob < 1 and mlm.mask_token_prob + mlm.random_token_prob <= 1,
    "config.data.mlm: need 0 < mask_prob < 1 and mask_token_prob + random_token_prob <= 1",
  )
  need = masking.required_predictions(seq_len, mlm.mask_prob)
  _require(
    mlm.max_predictions >= need,
    f"config.data.mlm.max_predictions: {mlm.max_predictions} is fewer than the {need} that "
    f"{mlm.mask_prob:.0%} of seq_len={seq_len} needs; raise it to at least {need}",
  )
  _require(
    mlm.nsp == (config.objective == "mlm_nsp"),
    f"config.data.mlm.nsp: {mlm.nsp} does not match objective {config.objective!r}; NSP "
    "pairs go with 'mlm_nsp', full-sentence packing with 'mlm'",
  )
  _require(
    mlm.nsp == config.model.nsp_head,
    "config.model.nsp_head: must be True exactly when config.data.mlm.nsp is",
  )
  _require(seq_len >= 8, f"config.batch.seq_len: {seq_len} is too short for sentence pairs")
  _require(
    not (mlm.nsp and config.data.document_mask),
    "config.data.document_mask: keeps a masked LM's packed documents apart, and NSP pairs are "
    "one example a row; set it with objective 'mlm' (data.mlm.nsp=False)",
  )
  _require(mlm.dupe_factor >= 1, "config.data.mlm.dupe_factor: must be at least 1")
