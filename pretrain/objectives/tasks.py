"""Fine-tuning tasks as objectives on the one trainer: GLUE classification and regression, NER,
and extractive QA.

Each task is an `objective.Objective` like `causal_lm` and `mlm_nsp`: its model (a head on
the encoder's backbone, models/encoder.py), its data (input_pipeline/finetuning/task_data.py with the
task's reader: glue.py, conll.py, squad.py), its loss, and what evaluation adds: predictions
per row, the task's metrics computed from them exactly as the standard scripts do
(pretrain/objectives/task_metrics.py), and the predictions written in the task's submission format.
Adding a task is adding one Objective here and a config in configs/finetune/.
"""

import json
import math

import jax.numpy as jnp
import numpy as np

from input_pipeline.finetuning import conll, glue, squad, task_data
from models import encoder
from pretrain.ground import errors, storage
from pretrain.objectives import objective, task_metrics

Objective = objective.Objective


class TaskError(errors.UserError):
  pass


def _hidden(model, batch, dropout_key):
  """The backbone's hidden states; packed rows (input_pipeline/finetuning/task_data.py) bring
  segment ids and positions that restart in each example."""
  return model(
    batch["inputs"],
    type_ids=batch["type_ids"],
    input_mask=batch["input_mask"],
    positions=batch.get("positions"),
    segment_ids=batch.get("segment_ids"),
    dropout_key=dropout_key,
  )


def _example_weights(batch):
  """Each example's weight: a row's [b], or [b, segments] for packed rows (0: an empty slot)."""
  w = batch["example_weights"]
  return w if "segment_weights" not in batch else w[:, None] * batch["segment_weights"]


def _mean_loss(outputs, denominator):
  """The loss of a task whose `outputs` sum it: the mean over `denominator` (examples or
  labelled tokens) of the whole batch."""

  def loss(model, batch, dropout_key, denominators):
    sums, _ = outputs(model, batch, dropout_key)
    return sums["loss_sum"] / jnp.maximum(denominators[denominator], 1.0), sums

  return loss


def _means(denominator, accuracy):
  """summarize: the mean loss and, as `accuracy`, the share of correct ones."""

  def summarize(s):
    return {
      "loss": objective.ratio(s["loss_sum"], s[denominator]),
      accuracy: objective.ratio(s["correct"], s[denominator]),
    }

  return summarize


def _examples_denominator(batch):
  return {"examples": jnp.sum(_example_weights(batch))}


def _weight_rows(batch, valid, token_bytes):
  del token_bytes
  return dict(batch, example_weights=batch["example_weights"] * valid.astype(np.float32))


def _flops_per_token(cfg, n_params, config):
  """6 N over the backbone's matrices (embeddings are lookups) plus attention."""
  body = n_params - (cfg.vocab_size + cfg.type_vocab_size) * cfg.d_model
  return 6 * body + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * config.batch.seq_len


def _fake_inputs(config, batch, vocab):
  rng = np.random.default_rng(0)
  seq = config.batch.seq_len
  return rng, {
    "inputs": rng.integers(5, vocab, (batch, seq)).astype(np.int32),
    "type_ids": np.zeros((batch, seq), np.int32),
    "input_mask": np.ones((batch, seq), np.int32),
    "example_weights": np.ones(batch, np.float32),
  }


def _check_num_labels(config, n, what):
  if config.model.num_labels != n:
    raise TaskError(
      f"config.model.num_labels: {config.model.num_labels}, but {what} has {n} "
      f"labels; set config.model.num_labels={n}"
    )


def _truncation_notes(truncated, n, what, seq_len):
  """The count of examples cut to the window, and a warning of its own when that is most of
  them: a window too small for the data is almost always a mistake."""
  if not truncated:
    return []
  notes = [f"{truncated:,} {what} truncated to the window"]
  if 2 * truncated > n:
    notes.append(
      f"warning: {truncated:,} of {n:,} {what} ({truncated / n:.0%}) lose tokens to "
      f"the {seq_len}-token window; raise config.batch.seq_len"
    )
  return notes


# ----------------------------------------------------------------------------- GLUE


def _glue_encode(examples, tok, data, seq_len, train):
  del train
  arrays, truncated = glue.encode(examples, data.task, tok, seq_len)
  return arrays, _truncation_notes(truncated, len(examples), "examples", seq_len)


GLUE_FORMAT = task_data.TaskFormat(
  read_file=lambda path, data: glue.read_tsv(path, data.task),
  from_tfds=lambda rows, data, info: glue.from_tfds(rows, data.task),
  encode=_glue_encode,
  batch_keys=("inputs", "type_ids", "input_mask", "labels"),
  texts=lambda examples: (v for e in examples for v in e.values() if isinstance(v, str)),
)


def _glue_load(config, tok, train):
  task = glue.get_task(config.data.task)
  _check_num_labels(config, task.num_labels, config.data.task)
  return task_data.load(config, GLUE_FORMAT, tok, train)


def _classify_outputs(model, batch, dropout_key):
  """(sums, per-example predictions): cross-entropy, or squared error for one output. Packed
  rows give [b, segments] of each."""
  hidden = _hidden(model, batch, dropout_key)
  logits = model.logits(
    hidden,
    dropout_key,
    batch.get("cls_positions"),
    input_mask=batch["input_mask"],
    segment_ids=batch.get("segment_ids"),
  )
  w = _example_weights(batch)
  if logits.shape[-1] == 1:
    score = logits[..., 0]
    return {"loss_sum": jnp.sum((score - batch["labels"]) ** 2 * w)}, {"scores": score}
  xent, correct = objective.cross_entropy(logits, batch["labels"])
  return (
    {"loss_sum": jnp.sum(xent * w), "correct": jnp.sum(correct * w)},
    {"labels": jnp.argmax(logits, -1).astype(jnp.int32)},
  )


def _classify_summarize(s):
  out = {"loss": objective.ratio(s["loss_sum"], s["examples"])}
  if "correct" in s:
    out["accuracy"] = objective.ratio(s["correct"], s["examples"])
  return out


def _glue_predictions(preds):
  return preds["scores"] if "scores" in preds else preds["labels"]


def _glue_score(preds, loader):
  labels = loader.arrays["labels"]
  if labels.dtype.kind == "i" and (labels < 0).all():  # a test split: no labels to score
    return {}
  task = glue.get_task(loader.data.task)
  return task_metrics.compute(task.metrics, _glue_predictions(preds), labels)


def _glue_write(preds, loader, path):
  """GLUE's submission format: 'index<TAB>prediction', labels by name where the task's files
  name them (MNLI, QNLI, RTE, AX)."""
  task = glue.get_task(loader.data.task)
  values = _glue_predictions(preds)
  with storage.path(path).open("w", encoding="utf-8") as f:
    f.write("index\tprediction\n")
    for example, value in zip(loader.source, values):
      if task.is_regression:
        value = f"{float(value):.3f}"
      elif task.tsv.names:
        value = task.label_names[int(value)]
      f.write(f"{example['idx']}\t{int(value) if isinstance(value, np.integer) else value}\n")


def _classify_fake(config, batch, vocab):
  rng, out = _fake_inputs(config, batch, vocab)
  n = config.model.num_labels
  out["labels"] = (
    rng.random(batch).astype(np.float32) if n == 1 else rng.integers(0, n, batch).astype(np.int32)
  )
  return out


# ----------------------------------------------------------------------------- NER


def ner_labels(data):
  """The tag set of config.data.labels, 'O' first."""
  return [t.strip() for t in data.labels.split(",") if t.strip()]


def _ner_encode(examples, tok, data, seq_len, train):
  del train
  arrays, truncated = conll.encode(examples, ner_labels(data), tok, seq_len)
  return arrays, _truncation_notes(truncated, len(examples), "sentences", seq_len)


def _tfds_ner(rows, data, info):
  del data
  return conll.from_tfds(rows, info.features["ner"].feature.names)


NER_FORMAT = task_data.TaskFormat(
  read_file=lambda path, data: conll.read_conll(path),
  from_tfds=_tfds_ner,
  encode=_ner_encode,
  batch_keys=("inputs", "type_ids", "input_mask", "labels"),
  texts=lambda examples: (" ".join(e["tokens"]) for e in examples),
)


def _ner_load(config, tok, train):
  _check_num_labels(config, len(ner_labels(config.data)), "config.data.labels")
  return task_data.load(config, NER_FORMAT, tok, train)


def _token_weights(batch):
  return (batch["labels"] >= 0) * batch["example_weights"][:, None]


def _tag_outputs(model, batch, dropout_key):
  logits = model.logits(_hidden(model, batch, dropout_key), dropout_key)
  xent, correct = objective.cross_entropy(logits, jnp.maximum(batch["labels"], 0))
  w = _token_weights(batch)
  return (
    {"loss_sum": jnp.sum(xent * w), "correct": jnp.sum(correct * w)},
    {"labels": jnp.argmax(logits, -1).astype(jnp.int32)},
  )


def _ner_tags(preds, loader):
  return conll.word_predictions(
    preds["labels"], loader.arrays, loader.source, ner_labels(loader.data)
  )


def _ner_score(preds, loader):
  gold = [e["ner_tags"] for e in loader.source]
  return task_metrics.entity_scores(gold, _ner_tags(preds, loader))


def _ner_write(preds, loader, path):
  """CoNLL lines 'word gold predicted', a blank line after each sentence."""
  with storage.path(path).open("w", encoding="utf-8") as f:
    for example, tags in zip(loader.source, _ner_tags(preds, loader)):
      for word, gold, tag in zip(example["tokens"], example["ner_tags"], tags):
        f.write(f"{word} {gold} {tag}\n")
      f.write("\n")


def _tag_fake(config, batch, vocab):
  rng, out = _fake_inputs(config, batch, vocab)
  out["labels"] = rng.integers(-1, config.model.num_labels, out["inputs"].shape).astype(np.int32)
  return out


# ----------------------------------------------------------------------------- SQuAD


def _squad_encode(examples, tok, data, seq_len, train):
  arrays, stats = squad.encode(
    examples,
    tok,
    seq_len,
    doc_stride=data.squad.doc_stride,
    max_query_len=data.squad.max_query_len,
    train=train,
  )
  notes = [f"{stats['features']:,} windows (doc stride {data.squad.doc_stride})"]
  if stats["dropped_no_span"]:
    notes.append(
      f"{stats['dropped_no_span']:,} questions whose answer text is not at its "
      "answer_start skipped for training"
    )
  return arrays, notes


def _squad_read(path, data):
  del data
  examples, _ = squad.read_json(path)  # mismatched answers: counted by encode when training
  return examples


SQUAD_FORMAT = task_data.TaskFormat(
  read_file=_squad_read,
  from_tfds=lambda rows, data, info: squad.from_tfds(rows),
  encode=_squad_encode,
  batch_keys=("inputs", "type_ids", "input_mask", "start_positions", "end_positions"),
  texts=lambda examples: (t for e in examples for t in (e["question"], e["context"])),
  position_keys=("start_positions", "end_positions"),
)


def _squad_load(config, tok, train):
  _check_num_labels(config, 2, "span extraction (start, end)")
  return task_data.load(config, SQUAD_FORMAT, tok, train)


NOT_IN_SPAN = -1e9  # the logit of a position no answer can take: padding, another example


def _span_outputs(model, batch, dropout_key):
  """Start and end over each example's own positions (never padding); packed rows give
  [b, segments] of starts and ends, each over its segment."""
  start, end = model.logits(_hidden(model, batch, dropout_key), dropout_key)
  real = batch["input_mask"].astype(bool)
  start, end = (jnp.where(real, x, NOT_IN_SPAN) for x in (start, end))
  if "segment_ids" in batch:  # [b, segments, t]: segment s+1's positions, for slot s
    slots = jnp.arange(batch["cls_positions"].shape[1]) + 1
    own = batch["segment_ids"][:, None, :] == slots[None, :, None]
    per = [jnp.where(own, x[:, None, :], NOT_IN_SPAN) for x in (start, end)]
  else:
    per = [start, end]
  xs, cs = objective.cross_entropy(per[0], batch["start_positions"])
  xe, ce = objective.cross_entropy(per[1], batch["end_positions"])
  w = _example_weights(batch)
  return (
    {"loss_sum": jnp.sum((xs + xe) / 2 * w), "correct": jnp.sum(cs * ce * w)},
    {"start_logits": start, "end_logits": end},
  )


def _squad_answers(preds, loader):
  cfg = loader.data.squad
  return squad.postprocess(
    preds["start_logits"],
    preds["end_logits"],
    loader.arrays,
    loader.source,
    n_best=cfg.n_best,
    max_answer_len=cfg.max_answer_len,
    version_2=cfg.version_2,
    null_threshold=cfg.null_threshold,
  )


def _squad_score(preds, loader):
  predictions, null_scores = _squad_answers(preds, loader)
  answers = {e["id"]: list(e["answers"]["text"]) for e in loader.source}
  if not loader.data.squad.version_2:
    return task_metrics.squad_scores(predictions, answers)
  # The null threshold is already applied; the null scores give the best threshold.
  return task_metrics.squad_v2_scores(
    predictions, answers, na_probs=null_scores, threshold=math.inf
  )


def _squad_write(preds, loader, path):
  """SQuAD's submission format: {question id: answer text} (v2.0: beside it, the null odds
  in <path>.null_odds.json, as the official evaluation script reads them)."""
  predictions, null_scores = _squad_answers(preds, loader)
  with storage.path(path).open("w", encoding="utf-8") as f:
    json.dump(predictions, f, indent=1, ensure_ascii=False)
  if loader.data.squad.version_2:
    with storage.path(path + ".null_odds.json").open("w", encoding="utf-8") as f:
      json.dump(null_scores, f, indent=1)


def _span_fake(config, batch, vocab):
  rng, out = _fake_inputs(config, batch, vocab)
  out["start_positions"] = rng.integers(0, config.batch.seq_len, batch).astype(np.int32)
  out["end_positions"] = out["start_positions"]
  return out


# ----------------------------------------------------------------------------- the objectives


def _task(
  name,
  model,
  load_data,
  outputs,
  loss,
  summarize,
  score,
  write,
  fake,
  denominators=_examples_denominator,
):
  return Objective(
    name=name,
    make_model=lambda cfg, rngs: model(cfg, rngs=rngs),
    build=None,
    load=None,
    denominators=denominators,
    loss=loss,
    summarize=summarize,
    flops_per_token=_flops_per_token,
    fake_batch=fake,
    eval_batch=_weight_rows,
    load_data=load_data,
    evaluate=lambda m, batch, den: outputs(m, batch, None),
    score=score,
    write_predictions=write,
  )


OBJECTIVES = {
  "classification": _task(  # GLUE: sentence (pair) classification, STS-B regression
    "classification",
    encoder.SequenceClassifier,
    _glue_load,
    _classify_outputs,
    _mean_loss(_classify_outputs, "examples"),
    _classify_summarize,
    _glue_score,
    _glue_write,
    _classify_fake,
  ),
  "token_classification": _task(  # NER
    "token_classification",
    encoder.TokenClassifier,
    _ner_load,
    _tag_outputs,
    _mean_loss(_tag_outputs, "tokens"),
    _means("tokens", "token_accuracy"),
    _ner_score,
    _ner_write,
    _tag_fake,
    denominators=lambda batch: {"tokens": jnp.sum(_token_weights(batch))},
  ),
  "span_extraction": _task(  # SQuAD v1.1 / v2.0
    "span_extraction",
    encoder.SpanClassifier,
    _squad_load,
    _span_outputs,
    _mean_loss(_span_outputs, "examples"),
    _means("examples", "span_accuracy"),
    _squad_score,
    _squad_write,
    _span_fake,
  ),
}
