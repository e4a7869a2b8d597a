r"""The accelerator rows: our production train step in bfloat16 on one GPU, its MFU, and
transformers' PyTorch models on the same GPU in the same run.

  python -m benchmarks.gpu                                   # every row, torch eager + compiled
  python -m benchmarks.gpu --rows=gpt2_small_1024 --torch=eager --timed_steps=20

Rows: GPT-2 small at seq 1024 (batch 32), BERT-base MLM+NSP at seq 128 (batch 256) and 512
(batch 64). Ours: benchmarks/throughput.py's `bench` (the step `pretrain.train` runs) with
bfloat16 compute, float32 parameters and cuDNN's fused attention. Theirs: transformers'
GPT2LMHeadModel / BertForPreTraining with float32 parameters under bfloat16 autocast, SDPA
attention and fused AdamW, eager and under torch.compile.

Both sides' FLOP/s use our formula for the same model (6N + 12 L d T per token; BERT's head only
at the masked positions, see pretrain/training/metrics.py), so the FLOP/s ratio is the tokens/s ratio.
MFU is given twice: over the bf16 matmul peak measured in this run (8192^3 on random data) and
over the vendor's dense bf16 peak (metrics.PEAK_FLOPS). Before timing, the run checks on this
GPU that cuDNN's attention and XLA's give the same loss and gradients in bfloat16: GPT-2
small (causal) and BERT-base with padded rows (a padding mask).
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave memory to torch's side

import jax
import jax.numpy as jnp
from absl import app, flags
from flax import nnx

from benchmarks import throughput, vs_pytorch
from configs import bert, gpt
from models import decoder, encoder, model_config
from pretrain.training import metrics

_ROWS = flags.DEFINE_list("rows", [], "Rows to run (default: all).")
_STEPS = flags.DEFINE_integer("timed_steps", 20, "Timed steps per row and side.")
_PARITY = flags.DEFINE_bool("parity", True, "Check cuDNN's attention against XLA's first.")
_TORCH = flags.DEFINE_list("torch", ["eager", "compile"], "PyTorch modes to run ('' for none).")

# row -> (throughput.CONFIGS name, batch, the transformers model)
ROWS = {
  "gpt2_small_1024": ("gpt2_small_1024", 32, "gpt2"),
  "bert_base_128": ("bert_base_128", 256, "bert"),
  "bert_base_512": ("bert_base_512", 64, "bert"),
}


def attention_parity(kind):
  """Relative differences (loss, gradients) of cuDNN's attention from XLA's, bf16: GPT-2 small
  on 4 x 1024 tokens, or BERT-base on 4 x 128 with rows padded to 128, 100, 77 and 5 tokens."""
  module, arg, vocab, model_class, t = dict(
    gpt2=(gpt, "small", 50257, decoder.Decoder, 1024),
    bert=(bert, "base", 30522, encoder.Backbone, 128),
  )[kind]

  def make(attention, seed):
    cfg = module.get_config(arg).model
    cfg.update(dtype="bfloat16", attention=attention)
    return model_class(model_config.resolve(cfg, vocab), rngs=nnx.Rngs(seed))

  xla_model, cudnn_model = make("xla", 0), make("cudnn", 1)
  nnx.update(cudnn_model, nnx.state(xla_model, nnx.Param))
  tokens = jax.random.randint(jax.random.key(0), (4, t), 0, vocab)
  kwargs = (
    {}
    if kind == "gpt2"
    else dict(input_mask=jnp.arange(t)[None] < jnp.array([128, 100, 77, 5])[:, None])
  )
  weights = jax.random.normal(jax.random.key(1), (4, t, 1))

  def run(model):
    graphdef, params = nnx.split(model, nnx.Param)
    loss = lambda p: jnp.mean(
      nnx.merge(graphdef, p)(tokens, **kwargs)[..., :64].astype(jnp.float32) * weights
    )
    return jax.jit(jax.value_and_grad(loss))(params)

  (a, ga), (b, gb) = run(xla_model), run(cudnn_model)
  flat = lambda g: jnp.concatenate([x.ravel().astype(jnp.float32) for x in jax.tree.leaves(g)])
  ga, gb = flat(ga), flat(gb)
  return float(abs(a - b) / abs(a)), float(jnp.linalg.norm(ga - gb) / jnp.linalg.norm(ga))


def main(argv):
  del argv
  device = jax.devices()[0]
  measured = metrics.measure_matmul_peak(n=8192, dtype=jnp.bfloat16, repeats=10)
  vendor, source = metrics.peak_flops()
  print(f"device: {device.device_kind} ({jax.default_backend()}); jax {jax.__version__}")
  print(
    f"bf16 matmul peak measured (8192^3, random): {measured / 1e12:.0f} TFLOP/s; "
    f"vendor dense bf16 ({source}): {vendor / 1e12:.0f} TFLOP/s"
  )
  if _PARITY.value:
    for kind in ("gpt2", "bert"):
      loss_err, grad_err = attention_parity(kind)
      print(
        f"cuDNN vs XLA attention, {kind}, bf16: loss rel. diff {loss_err:.2e}, "
        f"gradient rel. diff {grad_err:.2e}",
        flush=True,
      )
  print(
    "| row | side | batch x seq | ms/step | tokens/s | ours / theirs | TFLOP/s | "
    "MFU (measured peak) | MFU (vendor peak) |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for row in _ROWS.value or ROWS:
    name, batch, kind = ROWS[row]
    seq_len = throughput.CONFIGS[name][4]
    r = throughput.bench(name, _STEPS.value, "bfloat16", batch=batch, attention="cudnn")
    flops_per_token = r["flops"] / r["tokens_per_s"]
    tokens = batch * seq_len
    sides = [("pretrain (JAX)", r["step_ms"])]
    predictions = 20 if seq_len <= 128 else 80
    for mode in [m for m in _TORCH.value if m]:
      try:
        sides.append(
          (
            f"transformers ({mode})",
            vs_pytorch.transformers_step_ms(
              kind, batch, seq_len, predictions, _STEPS.value, "cuda", mode, warmup=3
            ),
          )
        )
      except Exception as e:
        print(
          f"| {row} | transformers ({mode}) | failed: {type(e).__name__}: {e} |".replace("\n", " ")
        )
      finally:
        import torch

        torch.cuda.empty_cache()  # the model and optimizer went with transformers_step_ms's frame
    for side, ms in sides:
      flops = flops_per_token * tokens / (ms / 1e3)
      ratio = "" if side.startswith("pretrain") else f"{ms / r['step_ms']:.2f}"
      print(
        f"| {row} | {side} | {batch} x {seq_len} | {ms:.1f} | {tokens / ms * 1e3:,.0f} | "
        f"{ratio} | {flops / 1e12:.0f} | {flops / measured:.3f} | {flops / vendor:.3f} |",
        flush=True,
      )


if __name__ == "__main__":
  app.run(main)
