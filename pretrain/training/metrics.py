"""Metrics: FLOP accounting for MFU, and the writers (stdout, metrics.jsonl, TensorBoard, W&B).

MFU formula (PaLM appendix B / nanoGPT): training FLOPs per token = 6 * N + 12 * L * d * T,
where N counts every parameter except the learned position table (the tied embedding counts
once, as it is also the output matmul; an untied input table is a lookup and does not count), L is layers, d the attention width (heads * head_dim)
and T the sequence length; the second term is attention's QK^T and AV matmuls (full T^2,
not halved for the causal mask). For masked LM the embedding tables are lookups only and the
MLM head (dense d x d + decoder d x V) runs at the P masked positions of each sequence:
6 * (N - V*d - types*d - 2*d^2) + 6 * (d^2 + V*d) * P / T + 12 * L * d * T, the 2*d^2 being the
MLM dense layer and the pooler, which run once per prediction / sequence rather than per token.
MFU = achieved FLOP/s per device / peak FLOP/s per device.
"""

import json
import math
import os
import secrets
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from pretrain.ground import errors, storage

# Dense peak FLOP/s per device in the accelerators' training dtype (bf16), from vendor sheets.
PEAK_FLOPS = {
  "NVIDIA H100": 989e12,  # SXM, dense bf16
  "NVIDIA H200": 989e12,
  "NVIDIA A100": 312e12,
  "NVIDIA L4": 121e12,
  "NVIDIA A10G": 125e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,  # v5e
  "TPU v5e": 197e12,
  "TPU v5p": 459e12,
  "TPU v6 lite": 918e12,  # v6e (Trillium)
  "TPU v6e": 918e12,
}


def flops_per_token(cfg, n_params, seq_len):
  """Training FLOPs per token (forward + backward) for a resolved model config. An untied
  input embedding is a lookup, like the position table: only the output head's V x d counts."""
  n = n_params if cfg.tie_embeddings else n_params - cfg.vocab_size * cfg.d_model
  return 6 * n + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def mlm_flops_per_token(cfg, n_params, seq_len, predictions):
  """Training FLOPs per token for a masked-LM encoder (see the module docstring)."""
  d, v = cfg.d_model, cfg.vocab_size
  body = n_params - v * d - cfg.type_vocab_size * d - 2 * d * d
  return (
    6 * body
    + 6 * (d * d + v * d) * predictions / seq_len
    + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len
  )


def measure_matmul_peak(n=1024, dtype=jnp.float32, repeats=5):
  """Achieved FLOP/s of a square matmul on the default device, on random data (zeros or ones
  can run faster than real data on a GPU)."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def _machine_key():
  """This machine's processor, core count and jax version: what a measured peak depends on."""
  model = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      model = next(
        (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
      )
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return (
    f"{jax.default_backend()}|{jax.devices()[0].device_kind}|{model}|{cores} cores|"
    f"jax {jax.__version__}|{os.environ.get('XLA_FLAGS', '')}"
  )


def cached_matmul_peak(remeasure=False):
  """The f32 matmul peak of this machine, measured once (best of several 2048^3 runs: one
  short run varied 2.5x between start-ups) and kept in <cache>/matmul_peak.json by machine, so
  that MFU compares between runs; `remeasure` (the benchmarks) keeps the higher of the two,
  since a busy machine only measures low. <cache>: $PRETRAIN_CACHE_DIR or ~/.cache/pretrain."""
  root = os.path.expanduser(os.environ.get("PRETRAIN_CACHE_DIR") or "~/.cache/pretrain")
  path, key = os.path.join(root, "matmul_peak.json"), _machine_key()
  try:
    with open(path) as f:
      table = json.load(f)
  except (OSError, ValueError):
    table = {}
  if key not in table or remeasure:
    measured = max(measure_matmul_peak(n=2048, repeats=3) for _ in range(3))
    table[key] = max(measured, table.get(key, 0.0))
    try:
      os.makedirs(root, exist_ok=True)
      storage.write_json(path, table)
    except OSError:
      pass  # a read-only home: measured again next time
  return table[key]


def peak_flops(configured=0.0):
  """Per-device peak: configured, else the table by device kind, else measured once per
  machine (CPU; cached_matmul_peak)."""
  if configured:
    return float(configured), "configured"
  kind = jax.devices()[0].device_kind
  for name, value in PEAK_FLOPS.items():
    if kind.startswith(name) or name in kind:
      return value, f"table:{name}"
  return cached_matmul_peak(), "measured f32 matmul, cached per machine"


def format_duration(seconds):
  if not math.isfinite(seconds):
    return "?"
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class _EventFiles:
  """tensorboardX's writer of gs:// event files: through pretrain.ground.storage (the clients every
  other file of a run goes through), rewritten whole on each flush as tensorboardX's own does,
  but without its upload again on garbage collection (which outlives the process's storage)."""

  def open(self, path):
    return storage.AppendLog(path, binary=True)

  def directory_check(self, path):
    pass  # object storage has no directories to create


# What tensorboardX imports where installed, and a run never needs from it: torch only to
# accept torch tensors (~2 s of start-up), boto3 and google-cloud-storage only for its own
# s3:// and gs:// writers (~0.5 s; run paths are local or gs://, written by _EventFiles).
TENSORBOARDX_SKIPS = ("torch", "boto3", "google.cloud.storage")


def import_tensorboardx():
  """tensorboardX, imported without the modules of TENSORBOARDX_SKIPS that are not imported
  already (tensorboardX expects each to be missing)."""
  if "tensorboardX" not in sys.modules:
    skipped = [name for name in TENSORBOARDX_SKIPS if name not in sys.modules]
    for name in skipped:
      sys.modules[name] = None  # importing it raises ImportError
    try:
      import tensorboardX  # noqa: F401  # imported here, with the skipped modules missing
    finally:
      for name in skipped:
        del sys.modules[name]
  tensorboardx = sys.modules.get("tensorboardX") or __import__("tensorboardX")
  tensorboardx.record_writer.register_writer_factory("gs", _EventFiles())
  return tensorboardx


class Writer:
  """Writes scalars to stdout, <workdir>/metrics.jsonl and TensorBoard, from process 0 only;
  also to a Weights & Biases run when wandb_config (config.wandb) is enabled, with run_config
  (the whole config) as the run's config.

  A run resumed at step `resumed_at` supersedes what an earlier run logged past that step
  (the steps it redoes), so that charts never double back: TensorBoard's events through
  purge_step, as Flax's and TF's writers do, and metrics.jsonl by a row
  {"step": resumed_at, "resumed": 1} after which rows of later steps replace those before it
  (read_rows applies it).
  """

  def __init__(self, workdir, enabled=True, wandb_config=None, run_config=None, resumed_at=None):
    self.enabled = enabled
    self.jsonl = self.tb = self.wandb = None
    if enabled:
      if wandb_config is not None and wandb_config.enabled:
        self.wandb = start_wandb(workdir, wandb_config, run_config)
      SummaryWriter = import_tensorboardx().SummaryWriter
      self.jsonl = storage.AppendLog(os.path.join(workdir, "metrics.jsonl"))
      purge = None if resumed_at is None else resumed_at + 1
      self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)
      if resumed_at is not None:
        self.jsonl.write(json.dumps({"step": int(resumed_at), "resumed": 1}) + "\n")
        self.jsonl.flush()

  def write(self, step, scalars, prefix=""):
    if not self.enabled:
      return
    scalars = {prefix + k: float(v) for k, v in scalars.items()}
    self.jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self.jsonl.flush()
    finite = {k: v for k, v in scalars.items() if np.isfinite(v)}
    for k, v in finite.items():
      self.tb.add_scalar(k, v, int(step))
    self.tb.flush()
    if self.wandb is not None:
      self.wandb.log(finite, step=int(step))

  def print(self, line):
    if self.enabled:
      print(line, flush=True)
      sys.stdout.flush()

  def close(self):
    if self.enabled:
      self.jsonl.close()
      self.tb.close()
      if self.wandb is not None:
        self.wandb.finish()


def read_rows(path):
  """The rows of a metrics.jsonl as the latest run sees them: a resumed run's marker row
  ({"step": S, "resumed": 1}) drops the rows of steps past S logged before it, and is dropped
  itself."""
  rows = []
  for line in storage.read_text(path).splitlines():
    row = json.loads(line)
    if row.get("resumed"):
      rows = [r for r in rows if r["step"] <= row["step"]]
    else:
      rows.append(row)
  return rows


def wandb_run_id(workdir):
  """The W&B run id of this workdir, kept in <workdir>/wandb_id.txt (made by the first run)."""
  path = os.path.join(workdir, "wandb_id.txt")
  if not storage.exists(path):
    storage.write_text(path, secrets.token_hex(6) + "\n")
  return storage.read_text(path).strip()


def start_wandb(workdir, wandb_config, run_config=None):
  """A W&B run logging into <workdir>/wandb (W&B's default local directory when the workdir
  is on object storage); a resumed run continues the workdir's run."""
  try:
    import wandb
  except ImportError as e:
    raise errors.UserError(
      "config.wandb.enabled: the wandb package is not installed; "
      "pip install wandb, or set config.wandb.enabled=False"
    ) from e
  workdir = storage.absolute(workdir)
  return wandb.init(
    project=wandb_config.project,
    entity=wandb_config.entity or None,
    group=wandb_config.group or None,
    name=wandb_config.name or os.path.basename(workdir),
    mode=wandb_config.mode or None,
    dir=None if storage.is_remote(workdir) else workdir,
    id=wandb_run_id(workdir),
    resume="allow",
    config=run_config.to_dict() if run_config is not None else None,
  )


def format_metrics(scalars):
  return " | ".join(f"{k} {v:.4g}" for k, v in scalars.items())
