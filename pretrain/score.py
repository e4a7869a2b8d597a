r"""Zero-shot multiple-choice scoring of a GPT run's checkpoint (HellaSwag-style).

  python -m pretrain.score --workdir=runs/gpt --tasks_file=hellaswag_val.jsonl
  python -m pretrain.score --workdir=runs/gpt --tasks_file=items.jsonl --step=1000 --limit=500 \
      --batch_size=64 --output=scores.jsonl

--tasks_file holds one item a line: {"context": str, "endings": [str, ...], "label": int} (the
original HellaSwag files' "ctx" is accepted for "context", used as it is: lm-eval's `hellaswag`
task also prefixes the activity label and cleans the text, so its numbers differ slightly).
Each ending is scored as lm-evaluation-harness scores a multiple_choice task with its default
target delimiter: the log-likelihood of " " + ending given the context, summed over its tokens.

  acc        the ending with the highest sum is the label
  acc_norm   the same with each sum divided by the ending's length in characters (lm-eval's
             acc_norm: `len(choice)` in `ConfigurableTask.process_results`)
  acc_bytes  divided by the ending's length in UTF-8 bytes (lm-eval's acc_bytes)

One line goes to stdout and one row (step, file, items, acc, acc_norm, acc_bytes) is appended
to <workdir>/score.jsonl, or to --output. The checkpoint is the latest (or --step), the
tokenizer the run's own.

`loglikelihoods(model, cfg, tok, requests, eos_id)` is the reusable part (pretrain/lm_eval.py
answers lm-eval's `loglikelihood` with it): for (context, continuation) pairs it returns
(sum of the continuation's token log-probabilities, whether every one of them is the argmax),
with lm-eval's tokenization (`TemplateLM._encode_pair`: trailing spaces of the context move to
the continuation, context + continuation are encoded together and split at the length of the
context's own encoding; an empty context is the EOS token), left-truncated to the model's
max_len as lm-eval's HF model does. Rows are sorted by length, right-padded to a power-of-two
length and batched at a fixed batch size: one compile per length bucket.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from flax import nnx

from models import decode
from pretrain.devices import process
from pretrain.ground import errors, storage
from pretrain.state import loading


class ScoreError(errors.UserError):
  pass


# ------------------------------------------------------------------------------------- items


def read_items(path, limit=0):
  """[(context, endings, label)] of a HellaSwag-style jsonl file (blank lines skipped); a
  malformed line is a one-line ScoreError naming the file and line."""
  if not storage.isfile(path):
    raise ScoreError(f"--tasks_file: {path!r} does not exist")
  items = []
  with storage.path(path).open(encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      items.append(_parse_item(line, f"{path}:{number}"))
      if limit and len(items) == limit:
        break
  if not items:
    raise ScoreError(f"--tasks_file: {path!r} holds no items")
  return items


def _parse_item(line, where):
  def bad(why):
    return ScoreError(f"--tasks_file: {where}: {why}")

  try:
    item = json.loads(line)
  except json.JSONDecodeError as e:
    raise bad(f"not JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(item, dict):
    raise bad("not a JSON object")
  context = item.get("context", item.get("ctx"))
  if not isinstance(context, str):
    raise bad("needs 'context' (or HellaSwag's 'ctx'), a string")
  endings = item.get("endings")
  if (
    not isinstance(endings, list)
    or len(endings) < 2
    or not all(isinstance(e, str) and e for e in endings)
  ):
    raise bad("needs 'endings', a list of at least 2 non-empty strings")
  label = item.get("label")
  if isinstance(label, str) and label.strip().isdigit():  # HF's HellaSwag has "label": "3"
    label = int(label)
  if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
    raise bad(
      f"needs 'label', the index of the right ending (0 to {len(endings) - 1}); got {label!r}"
    )
  return context, endings, label


# ------------------------------------------------------------------------------------ model


def load(workdir, step=None):
  """(model, resolved model config, tokenizer, EOS id, step) of a GPT run's checkpoint."""
  return loading.load_decoder(workdir, step, "scoring")


# ---------------------------------------------------------------------------- log-likelihood


def encode(tok, text):
  return tok.encode(text, add_special_tokens=False).ids


def encode_pair(tok, eos_id, context, continuation):
  """(context ids, continuation ids) as lm-eval's TemplateLM encodes a causal LM's request."""
  if not context:  # TemplateLM.loglikelihood: the prefix token (EOS) is the context
    cont = encode(tok, continuation)
    return (cont[:1], cont[1:]) if cont and cont[0] == eos_id else ([eos_id], cont)
  spaces = len(context) - len(context.rstrip())
  if spaces:
    continuation = context[-spaces:] + continuation
    context = context[:-spaces]
  whole = encode(tok, context + continuation)
  ctx = encode(tok, context)
  # a context of spaces alone is left empty (lm-eval would fail on it): start from EOS then
  return ctx or [eos_id], whole[len(ctx) :]


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _token_scores(graphdef, params, tokens, targets):
  """(log p(target) [b, t] float32, target is the argmax [b, t]) of tokens [b, t]."""
  logits = nnx.merge(graphdef, params)(tokens).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return picked, jnp.argmax(logits, axis=-1) == targets


def loglikelihood_tokens(model, cfg, pairs, batch_size=32):
  """[(log-likelihood, is_greedy)] of token-id pairs (context, continuation); a context too
  long for cfg.max_len is cut from the left (as lm-eval's HF model)."""
  if not pairs:
    return []
  rows = []
  for i, (context, continuation) in enumerate(pairs):
    if not context or not continuation:
      raise ValueError(f"request {i}: the context and the continuation need a token each")
    if len(continuation) > cfg.max_len:
      raise ValueError(
        f"request {i}: its continuation has {len(continuation)} tokens, more than "
        f"max_len={cfg.max_len}"
      )
    whole = (list(context) + list(continuation))[-(cfg.max_len + 1) :]
    rows.append((whole[:-1], whole[1:], len(continuation)))
  graphdef, params = nnx.split(model)
  size = decode.bucket(len(rows), batch_size, smallest=1)  # one batch shape for every call
  order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
  results = [None] * len(rows)
  for start in range(0, len(order), size):
    chunk = order[start : start + size]
    width = decode.bucket(len(rows[chunk[0]][0]), cfg.max_len)
    tokens = np.zeros((size, width), np.int32)
    targets = np.zeros((size, width), np.int32)
    for r, i in enumerate(chunk):
      inp, tgt, _ = rows[i]
      tokens[r, : len(inp)], targets[r, : len(tgt)] = inp, tgt
    logp, greedy = _token_scores(graphdef, params, jnp.asarray(tokens), jnp.asarray(targets))
    logp, greedy = np.asarray(logp, np.float64), np.asarray(greedy)
    for r, i in enumerate(chunk):
      end = len(rows[i][0])
      span = slice(end - rows[i][2], end)
      results[i] = (float(logp[r, span].sum()), bool(greedy[r, span].all()))
  return results


def loglikelihoods(model, cfg, tok, requests, eos_id, batch_size=32):
  """[(log-likelihood, is_greedy)] of (context, continuation) strings, as lm-eval's
  `loglikelihood` (see the module's docstring)."""
  pairs = [encode_pair(tok, eos_id, c, x) for c, x in requests]
  return loglikelihood_tokens(model, cfg, pairs, batch_size)


# ------------------------------------------------------------------------------------ scores


def score_items(model, cfg, tok, eos_id, items, batch_size=32):
  """{acc, acc_norm, acc_bytes, items} of [(context, endings, label)] (lm-eval's rules)."""
  requests = [(context, " " + ending) for context, endings, _ in items for ending in endings]
  lls = iter(ll for ll, _ in loglikelihoods(model, cfg, tok, requests, eos_id, batch_size))
  hits = np.zeros(3)
  for _, endings, label in items:
    ll = np.array([next(lls) for _ in endings])
    chars = np.array([float(len(e)) for e in endings])
    nbytes = np.array([float(len(e.encode("utf-8"))) for e in endings])
    hits += [
      np.argmax(ll) == label,
      np.argmax(ll / chars) == label,
      np.argmax(ll / nbytes) == label,
    ]
  acc, acc_norm, acc_bytes = (hits / len(items)).tolist()
  return dict(acc=acc, acc_norm=acc_norm, acc_bytes=acc_bytes, items=len(items))


def score(workdir, tasks_file, *, step=None, batch_size=32, limit=0, output=""):
  """Scores a run's checkpoint on a tasks file; appends the row to `output` (default
  <workdir>/score.jsonl) and returns it."""
  if batch_size < 1:
    raise ScoreError(f"--batch_size: {batch_size} is out of range; give at least 1")
  if limit < 0:
    raise ScoreError(f"--limit: {limit} is out of range; give 0 (all items) or more")
  items = read_items(tasks_file, limit)  # before the checkpoint: a bad file fails fast
  model, cfg, tok, eos_id, step = load(workdir, step)
  row = dict(step=step, file=tasks_file, **score_items(model, cfg, tok, eos_id, items, batch_size))
  log = storage.AppendLog(output or os.path.join(workdir, "score.jsonl"))
  log.write(json.dumps(row) + "\n")
  log.close()
  return row


def define_flags():
  """The command line's flags (defined only when run as a program: pretrain.evaluate defines
  flags of the same names at import)."""
  flags.DEFINE_string("workdir", None, "A GPT run's directory.")
  flags.DEFINE_string(
    "tasks_file", None, "Items, one JSON object a line: context (or ctx), endings, label."
  )
  flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
  flags.DEFINE_integer("batch_size", 32, "Sequences scored together.")
  flags.DEFINE_integer("limit", 0, "Score only the first N items (0: all).")
  flags.DEFINE_string("output", "", "Append the row here (default: <workdir>/score.jsonl).")
  flags.mark_flags_as_required(["workdir", "tasks_file"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  process.start()
  f = flags.FLAGS
  row = process.run_reporting_user_errors(
    score,
    f.workdir,
    f.tasks_file,
    step=f.step,
    batch_size=f.batch_size,
    limit=f.limit,
    output=f.output,
  )
  print(
    f"step {row['step']}: acc {row['acc']:.4f} | acc_norm {row['acc_norm']:.4f} | "
    f"acc_bytes {row['acc_bytes']:.4f} | {row['items']} items of {row['file']}",
    flush=True,
  )


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: errors.parse_flags(argv, define_flags))
