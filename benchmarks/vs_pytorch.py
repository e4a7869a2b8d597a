r"""Our train step against the PyTorch references, side by side in one run on this machine.

  python -m benchmarks.vs_pytorch --nanogpt=/path/to/nanoGPT        # GPT rows and BERT
  python -m benchmarks.vs_pytorch --nanogpt=... --configs=baby --gpt_steps=200
  python -m benchmarks.vs_pytorch --nanogpt=... --rounds=3      # pairs, in alternating order

GPT: karpathy/nanoGPT's own train.py (a checkout outside this repository, given as --nanogpt;
its rows are skipped without one), run on CPU with --compile=False on the same model, batch,
data (tinyshakespeare, characters, first 90% train) and optimizer (AdamW, lr 1e-3 with 100
warmup steps, beta2 0.99, weight decay 0.1, clip 1.0), dropout 0 and no biases; against
`pretrain.train`'s own loop (trainer.train_and_evaluate) and its logged ms/step, which leaves
out the first step (compilation) as nanoGPT's median leaves out its first iterations. Both
sides' achieved FLOP/s use one formula (6N + 12 L d T per token, pretrain/training/metrics.py) and are
divided by the f32 matmul peak measured in this run (XLA's, cached per machine and
remeasured; torch's, 2048^3 in the same run).

BERT: `transformers`' BertForPreTraining (MLM + NSP, torch AdamW) against our production
train step (benchmarks/throughput.py's `bench`) at the same config and batch (BERT-base, seq
128, 20 masked positions per sequence).

--rounds=N measures each config's pair N times, ours first in odd rounds and theirs first in
even ones (benchmarks/rounds.py), and ends with each config's ratios, their median and range.
"""

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from flax import nnx

from benchmarks import shakespeare_config, throughput
from benchmarks.rounds import paired_rounds, ratio_summary
from models import layers, model_config
from pretrain.devices import host_memory
from pretrain.objectives import registry
from pretrain.training import metrics, trainer

_NANOGPT = flags.DEFINE_string(
  "nanogpt",
  os.environ.get("NANOGPT", ""),
  "A karpathy/nanoGPT checkout (its train.py, model.py, configurator.py).",
)
_DATA = flags.DEFINE_string("data", shakespeare_config.DEFAULT_DATA, "tinyshakespeare input.txt")
_CONFIGS = flags.DEFINE_list("configs", ["baby", "shakespeare_char", "bert_base"], "Rows to run.")
_GPT_STEPS = flags.DEFINE_integer("gpt_steps", 0, "Steps per GPT run (0: each config's own).")
_BERT_STEPS = flags.DEFINE_integer("bert_steps", 5, "Timed BERT steps per side.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where runs go ('': a temporary directory).")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Pairs measured per config, in alternating order.")

# name -> (layers, heads, width, block, batch, steps timed by default)
GPT = {"baby": (4, 4, 128, 64, 12, 100), "shakespeare_char": (6, 6, 384, 256, 16, 12)}


def torch_matmul_peak(n=2048, repeats=5):
  import torch

  a = torch.ones(n, n)
  a @ a
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - t)
  return 2 * n**3 / best


def gpt_config(name, data_dir, steps):
  n_layer, n_head, n_embd, block, batch, _ = GPT[name]
  config = shakespeare_config.get_config(_DATA.value, data_dir, steps)
  config.model.update(num_layers=n_layer, num_heads=n_head, d_model=n_embd, max_len=block)
  config.batch.update(size=batch, seq_len=block)
  config.train.update(log_every=max(1, steps // 5), eval_every=0, eval_batches=1)
  config.checkpoint.update(every=0, async_save=False)
  return config


def ours_gpt(name, workdir, steps, run_name=None):
  """(ms/step as pretrain.train logs it: the median of its windows after the first, the mean
  train loss of its last window, FLOPs per token), from a new run in workdir/run_name."""
  config = gpt_config(name, os.path.join(workdir, "data"), steps)
  run_dir = os.path.join(workdir, run_name or f"ours_{name}")
  trainer.train_and_evaluate(config, run_dir)
  rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
  logged = [r for r in rows if "train/step_time_s" in r]
  ms = statistics.median(r["train/step_time_s"] for r in logged[1:] or logged) * 1e3
  cfg = model_config.resolve(config.model, 65)
  objective = registry.get("causal_lm")
  n = layers.count_params(lambda: objective.make_model(cfg, nnx.Rngs(0)))
  return ms, logged[-1]["train/loss"], metrics.flops_per_token(cfg, n, config.batch.seq_len)


def nanogpt_data(directory):
  """nanoGPT's shakespeare_char files (train.bin, val.bin, meta.pkl), made by its own
  data/shakespeare_char/prepare.py from --data (it downloads input.txt only when missing)."""
  out = os.path.join(directory, "data", "shakespeare_char")
  os.makedirs(out, exist_ok=True)
  shutil.copy(_DATA.value, os.path.join(out, "input.txt"))
  prepare = os.path.join(out, "prepare.py")
  os.symlink(
    os.path.join(os.path.abspath(_NANOGPT.value), "data", "shakespeare_char", "prepare.py"), prepare
  )
  subprocess.run([sys.executable, prepare], cwd=directory, check=True, capture_output=True)


def nanogpt(name, workdir, steps):
  """(median ms per iteration after the first 5, the last logged loss) of nanoGPT's train.py."""
  n_layer, n_head, n_embd, block, batch, _ = GPT[name]
  cwd = os.path.join(workdir, "nanogpt")
  if not os.path.exists(cwd):
    os.makedirs(cwd)
    for f in ("train.py", "model.py", "configurator.py"):
      os.symlink(os.path.join(os.path.abspath(_NANOGPT.value), f), os.path.join(cwd, f))
    nanogpt_data(cwd)
  args = dict(
    dataset="shakespeare_char",
    device="cpu",
    compile=False,
    dtype="float32",
    eval_interval=10**9,
    eval_iters=1,
    log_interval=1,
    max_iters=steps,
    lr_decay_iters=2000,
    learning_rate=1e-3,
    min_lr=1e-4,
    warmup_iters=100,
    beta2=0.99,
    weight_decay=0.1,
    grad_clip=1.0,
    batch_size=batch,
    block_size=block,
    n_layer=n_layer,
    n_head=n_head,
    n_embd=n_embd,
    dropout=0.0,
    bias=False,
    gradient_accumulation_steps=1,
    always_save_checkpoint=False,
    wandb_log=False,
    out_dir=os.path.join(cwd, "out"),
  )
  out = subprocess.run(
    [sys.executable, "train.py"] + [f"--{k}={v}" for k, v in args.items()],
    cwd=cwd,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  iters = [
    (float(ms), float(loss))
    for loss, ms in re.findall(r"iter \d+: loss ([\d.]+), time ([\d.]+)ms", out)
  ]
  return statistics.median(ms for ms, _ in iters[5:]), iters[-1][1]


def transformers_batch(kind, vocab, batch, seq_len, predictions, device):
  """Random inputs for transformers' GPT2LMHeadModel ('gpt2') or BertForPreTraining ('bert':
  `predictions` masked positions a row and a next-sentence label)."""
  import torch

  rng = np.random.default_rng(0)
  inputs = torch.tensor(rng.integers(5, vocab, (batch, seq_len)), device=device)
  if kind == "gpt2":
    return dict(input_ids=inputs, labels=inputs)
  labels = torch.full((batch, seq_len), -100, device=device)
  for row in range(batch):
    where = torch.tensor(rng.choice(np.arange(1, seq_len), predictions, replace=False))
    labels[row, where] = inputs[row, where]
  return dict(
    input_ids=inputs,
    token_type_ids=torch.zeros_like(inputs),
    attention_mask=torch.ones_like(inputs),
    labels=labels,
    next_sentence_label=torch.tensor(rng.integers(0, 2, batch), device=device),
  )


def transformers_step_ms(
  kind, batch, seq_len, predictions, steps, device="cpu", mode="eager", warmup=2
):
  """Median ms per train step of transformers' GPT-2 small or BERT-base (SDPA attention, torch
  AdamW): float32 on CPU; float32 weights under bf16 autocast with fused AdamW on 'cuda'.
  mode 'compile' runs the model under torch.compile."""
  import torch
  import transformers

  torch.manual_seed(0)
  if kind == "gpt2":
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(attn_implementation="sdpa"))
  else:
    model = transformers.BertForPreTraining(transformers.BertConfig(attn_implementation="sdpa"))
  model = model.to(device)
  cuda = device == "cuda"
  opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=cuda)
  forward = torch.compile(model) if mode == "compile" else model
  inputs = transformers_batch(kind, model.config.vocab_size, batch, seq_len, predictions, device)
  sync = torch.cuda.synchronize if cuda else (lambda: None)

  def step():
    with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
      loss = forward(**inputs).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

  for _ in range(warmup):
    step()
  sync()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    sync()
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def _row(name, side, ms, tokens, fpt, peaks, ratio="", loss=""):
  flops = fpt * tokens / (ms / 1e3)
  print(
    f"| {name} | {side} | {ms:.1f} | {tokens / ms * 1e3:,.0f} | {ratio} | "
    f"{flops / 1e9:.1f} | {flops / peaks[0]:.3f} | {flops / peaks[1]:.3f} | {loss} |",
    flush=True,
  )


def gpt_rows(name, workdir, peaks):
  """The rows of a GPT config against nanoGPT; its ratios (empty without --nanogpt)."""
  steps = _GPT_STEPS.value or GPT[name][5]
  tokens = GPT[name][3] * GPT[name][4]
  have_nanogpt = bool(_NANOGPT.value) and os.path.exists(os.path.join(_NANOGPT.value, "train.py"))
  pairs = paired_rounds(
    lambda r: ours_gpt(name, workdir, steps, f"ours_{name}_{r}"),
    lambda r: nanogpt(name, workdir, steps) if have_nanogpt else None,
    _ROUNDS.value,
  )
  for (ms, loss, fpt), theirs in pairs:
    _row(
      name,
      "pretrain",
      ms,
      tokens,
      fpt,
      peaks,
      f"{theirs[0] / ms:.2f}" if theirs else "",
      f"{loss:.4f}",
    )
    if theirs is None:
      print(f"| {name} | nanoGPT | skipped: no --nanogpt checkout | | | | | | |")
    else:
      _row(name, "nanoGPT", theirs[0], tokens, fpt, peaks, loss=f"{theirs[1]:.4f}")
  return [theirs[0] / ms for (ms, _, _), theirs in pairs if theirs]


def bert_rows(peaks):
  """The rows of BERT-base against transformers; its ratios."""
  tokens = 8 * 128
  pairs = paired_rounds(
    lambda r: throughput.bench("bert_base_128", _BERT_STEPS.value, "float32"),
    lambda r: transformers_step_ms("bert", 8, 128, 20, _BERT_STEPS.value),
    _ROUNDS.value,
  )
  for ours, hf_ms in pairs:
    fpt = ours["flops"] / ours["tokens_per_s"]
    _row(
      "bert_base_128",
      "pretrain",
      ours["step_ms"],
      tokens,
      fpt,
      peaks,
      f"{hf_ms / ours['step_ms']:.2f}",
    )
    _row("bert_base_128", "transformers", hf_ms, tokens, fpt, peaks)
  return [hf_ms / ours["step_ms"] for ours, hf_ms in pairs]


def main(argv):
  del argv
  host_memory.configure()  # as the entry points do (pretrain.devices.process.start)
  try:
    import torch  # noqa: F401
  except ImportError:
    print("skipped: torch is not installed (pip install -e '.[test]')")
    return
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="vs_pytorch_")
  peaks = metrics.cached_matmul_peak(remeasure=True), torch_matmul_peak()
  print(
    f"f32 matmul peak (2048^3): XLA {peaks[0] / 1e9:.1f} GFLOP/s, torch "
    f"{peaks[1] / 1e9:.1f} GFLOP/s"
  )
  print(
    "| config | side | ms/step | tokens/s | ratio (ours / theirs, tokens/s) | "
    "achieved GFLOP/s | / XLA peak | / torch peak | train loss at the end |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  ratios = {name: gpt_rows(name, workdir, peaks) for name in _CONFIGS.value if name in GPT}
  if "bert_base" in _CONFIGS.value:
    ratios["bert_base_128"] = bert_rows(peaks)
  for name, rs in ratios.items():
    if rs:
      print(f"{name}: ours / theirs, tokens/s: {ratio_summary(rs)}")


if __name__ == "__main__":
  app.run(main)
