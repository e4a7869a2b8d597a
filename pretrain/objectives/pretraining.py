"""Pretraining's objectives: causal LM (GPT) and masked LM with or without next-sentence
prediction (BERT, RoBERTa).

An objective names its model, its data and its loss:
  * `denominators(batch)`: the counts the means divide by (tokens, masked tokens, examples),
    taken over the whole global batch before it is split into microbatches, so that gradient
    accumulation gives exactly the gradient of the full-batch mean;
  * `loss(model, batch, dropout_key, denominators)` -> (scalar loss, dict of float32 sums);
  * `summarize(sums and denominators added over steps/batches)` -> the means to report.
Padding rows and tokens carry weight 0 and so contribute nothing.
"""

import math

import jax.numpy as jnp
import numpy as np

from input_pipeline import bert_data, lm_data
from models import decoder, encoder
from pretrain.objectives.objective import (
  Objective,
  cross_entropy,
  cross_entropy_lse,
  ratio,
  with_z_loss,
)
from pretrain.training import metrics


def causal_lm_denominators(batch):
  return {"tokens": jnp.sum(batch.get("weights", jnp.ones(batch["targets"].shape, jnp.float32)))}


def causal_lm_loss(model, batch, dropout_key, denominators):
  logits = model(
    batch["inputs"],
    positions=batch.get("positions"),
    segment_ids=batch.get("segment_ids"),
    dropout_key=dropout_key,
  )
  xent, correct, lse = cross_entropy_lse(logits, batch["targets"])
  weights = batch.get("weights", jnp.ones_like(xent))
  sums = {"loss_sum": jnp.sum(xent * weights), "correct": jnp.sum(correct * weights)}
  if "target_bytes" in batch:  # evaluation: bits per byte over the tokens that cover text
    text = weights * (batch["target_bytes"] > 0)
    sums.update(text_loss_sum=jnp.sum(xent * text), bytes=jnp.sum(batch["target_bytes"] * weights))
  loss = sums["loss_sum"] / jnp.maximum(denominators["tokens"], 1.0)
  return with_z_loss(model, loss, sums, lse, weights, denominators["tokens"])


def causal_lm_eval_batch(batch, valid, token_bytes):
  """Weights 0 on padding rows; the UTF-8 bytes each target token stands for (bits per byte)."""
  weights = np.broadcast_to(valid[:, None], batch["targets"].shape).astype(np.float32)
  out = dict(batch, weights=weights * batch.get("weights", 1.0))
  if token_bytes is not None:
    out["target_bytes"] = token_bytes[batch["targets"]].astype(np.float32)
  return out


def causal_lm_fake_batch(config, batch, vocab):
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, vocab, (batch, config.batch.seq_len + 1)).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def causal_lm_summarize(s):
  loss = ratio(s["loss_sum"], s["tokens"])
  out = {
    "loss": loss,
    "perplexity": math.exp(min(loss, 80.0)),
    "accuracy": ratio(s["correct"], s["tokens"]),
  }
  if "bytes" in s:  # summed loss over text tokens, in bits, per UTF-8 byte of that text
    out["bits_per_byte"] = ratio(s["text_loss_sum"], s["bytes"]) / math.log(2)
  if "z_sum" in s:
    out["z_loss"] = ratio(s["z_sum"], s["tokens"])  # mean logsumexp^2, before its coefficient
  return out


# ----------------------------------------------------------------------------- masked LM (+ NSP)


def mlm_denominators(batch):
  return {
    "mlm_tokens": jnp.sum(batch["masked_weights"]),
    "examples": jnp.sum(batch["example_weights"]),
  }


def mlm_loss(model, batch, dropout_key, denominators):
  """Masked-LM cross-entropy (mean over masked tokens), plus NSP (mean over examples) when the
  batch has next-sentence labels."""
  hidden = model(
    batch["inputs"],
    type_ids=batch["type_ids"],
    input_mask=batch["input_mask"],
    positions=batch.get("positions"),
    segment_ids=batch.get("segment_ids"),
    dropout_key=dropout_key,
  )
  xent, correct, lse = cross_entropy_lse(
    model.mlm_logits(hidden, batch["masked_positions"]), batch["masked_ids"]
  )
  w = batch["masked_weights"]
  sums = {"mlm_loss_sum": jnp.sum(xent * w), "mlm_correct": jnp.sum(correct * w)}
  loss = sums["mlm_loss_sum"] / jnp.maximum(denominators["mlm_tokens"], 1.0)
  loss, sums = with_z_loss(model, loss, sums, lse, w, denominators["mlm_tokens"])
  if "nsp_labels" in batch:
    nsp_xent, nsp_correct = cross_entropy(
      model.nsp_logits(model.pooled(hidden)), batch["nsp_labels"]
    )
    ew = batch["example_weights"]
    sums.update(nsp_loss_sum=jnp.sum(nsp_xent * ew), nsp_correct=jnp.sum(nsp_correct * ew))
    loss = loss + sums["nsp_loss_sum"] / jnp.maximum(denominators["examples"], 1.0)
  return loss, sums


def mlm_fake_batch(config, batch, vocab):
  rng = np.random.default_rng(0)
  seq_len, p = config.batch.seq_len, config.data.mlm.max_predictions
  positions = np.sort(
    np.stack([rng.choice(np.arange(1, seq_len), p, replace=False) for _ in range(batch)]), axis=1
  ).astype(np.int32)
  out = {
    "inputs": rng.integers(5, vocab, (batch, seq_len)).astype(np.int32),
    "type_ids": (np.arange(seq_len) >= seq_len // 2).astype(np.int32)[None].repeat(batch, 0),
    "input_mask": np.ones((batch, seq_len), np.int32),
    "masked_positions": positions,
    "masked_ids": rng.integers(5, vocab, (batch, p)).astype(np.int32),
    "masked_weights": np.ones((batch, p), np.float32),
    "example_weights": np.ones(batch, np.float32),
  }
  if config.data.mlm.nsp:
    out["nsp_labels"] = rng.integers(0, 2, batch).astype(np.int32)
  return out


def mlm_eval_batch(batch, valid, token_bytes):
  """Weights 0 on padding rows (their masked tokens and their next-sentence label)."""
  del token_bytes  # bits per byte is a causal-LM measure
  valid = valid.astype(np.float32)
  return dict(
    batch,
    masked_weights=batch["masked_weights"] * valid[:, None],
    example_weights=batch["example_weights"] * valid,
  )


def mlm_summarize(s):
  out = {
    "mlm_loss": ratio(s["mlm_loss_sum"], s["mlm_tokens"]),
    "mlm_accuracy": ratio(s["mlm_correct"], s["mlm_tokens"]),
  }
  out["loss"] = out["mlm_loss"]
  if "z_sum" in s:
    out["z_loss"] = ratio(s["z_sum"], s["mlm_tokens"])
  if "nsp_loss_sum" in s:
    out.update(
      nsp_loss=ratio(s["nsp_loss_sum"], s["examples"]),
      nsp_accuracy=ratio(s["nsp_correct"], s["examples"]),
    )
    out["loss"] += out["nsp_loss"]
  return out


def _mlm_objective(name):
  return Objective(
    name=name,
    make_model=lambda cfg, rngs: encoder.Encoder(cfg, rngs=rngs),
    build=bert_data.build_examples,
    load=bert_data.load,
    denominators=mlm_denominators,
    loss=mlm_loss,
    summarize=mlm_summarize,
    flops_per_token=lambda cfg, n, config: metrics.mlm_flops_per_token(
      cfg, n, config.batch.seq_len, config.data.mlm.max_predictions
    ),
    fake_batch=mlm_fake_batch,
    eval_batch=mlm_eval_batch,
  )


OBJECTIVES = {
  "causal_lm": Objective(
    name="causal_lm",
    make_model=lambda cfg, rngs: decoder.Decoder(cfg, rngs=rngs),
    build=lambda *args, **kw: None,  # windows need nothing beyond the tokenized split
    load=lambda split, data, tok, **kw: lm_data.load(
      split, data, eos_id=tok.token_to_id(data.tokenizer.eos_token), **kw
    ),
    denominators=causal_lm_denominators,
    loss=causal_lm_loss,
    summarize=causal_lm_summarize,
    flops_per_token=lambda cfg, n, config: metrics.flops_per_token(cfg, n, config.batch.seq_len),
    fake_batch=causal_lm_fake_batch,
    eval_batch=causal_lm_eval_batch,
  ),
  "mlm_nsp": _mlm_objective("mlm_nsp"),  # BERT: masked LM + next-sentence prediction
  "mlm": _mlm_objective("mlm"),  # RoBERTa: masked LM only
}
