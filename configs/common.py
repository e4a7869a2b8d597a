"""Sections shared by every experiment file: data, optimizer, batch, mesh, cadence, seed.

Each model family's file (gpt.py, bert.py) starts from `base_config()` and fills in its model
section and the values that differ. Defaults live here, not in the trainer.
"""

import ml_collections

from models import axes

# Logical axis -> mesh axes. One rule per logical name. Within one array, each logical axis
# takes those of its mesh axes that no earlier axis of the array has taken, possibly only some
# of them (models/axes.py logical_to_mesh). `None` means replicated.
DEFAULT_RULES = (
  (axes.BATCH, ("data", "fsdp")),
  (axes.LENGTH, "sequence"),
  (axes.EMBED, "fsdp"),
  (axes.ACT_EMBED, "tensor"),
  (axes.MLP, "tensor"),
  (axes.HEADS, "tensor"),
  (axes.KV_HEADS, "tensor"),
  (axes.HEAD_DIM, None),
  (axes.VOCAB, "tensor"),
  (axes.POSITIONS, None),
  (axes.LAYERS, None),
  (axes.TYPES, None),
  (axes.CLASSES, None),
)


def parse_arg(arg, positional="size", **defaults):
  """Parses 'small,key=value,...' (big_vision style) into a ConfigDict; a first part without
  '=' sets `positional` (the size; a fine-tuning config's task)."""
  parts = [p for p in (arg or "").split(",") if p]
  out = dict(defaults)
  if parts and "=" not in parts[0]:
    out[positional] = parts.pop(0)
  for part in parts:
    key, sep, value = part.partition("=")
    if not sep or key not in defaults:
      raise ValueError(
        f"config arg {arg!r}: unknown option {key!r}; expected one of {sorted(defaults)}"
      )
    out[key] = type(defaults[key])(value) if defaults[key] is not None else value
  return ml_collections.ConfigDict(out)


def model_config(model_module, size):
  """A model section: the module's architecture DEFAULTS with the numbers of SIZES[size]."""
  if size not in model_module.SIZES:
    raise ValueError(
      f"config arg: unknown size {size!r}; choose one of {', '.join(model_module.SIZES)}"
    )
  model = ml_collections.ConfigDict(model_module.DEFAULTS)
  model.update(model_module.SIZES[size])
  model.size = size
  return model


def apply_overrides(config, overrides):
  """Sets dotted fields, e.g. {'model.num_layers': 2} (for tests and scripts)."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return config


def data_config():
  data = ml_collections.ConfigDict()
  # 'local_text' is our own tfds builder over `files` (default corpus: CPython's pydoc topics);
  # any other name is a tfds dataset already prepared in `data_dir` (lm1b, wikipedia/..., c4/...).
  data.dataset = "local_text"
  data.data_dir = "data"  # tfds data_dir; tokenizers are cached under <data_dir>/tokenizers
  # A gs:// data_dir (or tokenized_dir) is used through a local mirror in
  # <cache_dir>/gs/<bucket>/<path>: what a run needs is downloaded, what it prepares uploaded
  # (input_pipeline/corpora/mirror.py). '': $PRETRAIN_CACHE_DIR, else ~/.cache/pretrain.
  data.cache_dir = ""
  data.files = ""  # local_text: comma-separated paths or globs (.txt, .jsonl, .gz)
  data.doc_split = "file"  # local_text: a document is a 'file' or a 'blank_line' block
  data.validation_fraction = 0.05  # local_text: share of documents (or text) held out
  data.split_by = "hash"  # local_text: 'hash' of each document, or 'tail' (last chars)
  data.text_key = "text"  # feature holding the text in the tfds examples
  data.jsonl_key = "text"  # local_text: the text field of .jsonl lines, Parquet and Arrow records
  data.skip_bad_shards = False  # local_text: skip (and count) damaged shards instead of stopping
  data.train_split = "train"
  data.eval_split = "validation"
  data.document_mask = False  # mask attention across packed documents (segment ids)
  data.shuffle = True
  # Every split is tokenized once, by `python -m input_pipeline.prepare` or by the first run
  # that needs it, into <data_dir>/tokenized/<dataset>/tokenizer-<id>/ (one copy per
  # tokenizer), or into tokenized_dir if set (one tokenization; another tokenizer is refused).
  data.tokenized_dir = ""
  data.prepare_pieces = 0  # pieces per tokenized split (units of parallel, resumable
  # preparation); 0: files read shard by shard, runs of shards of about 64 MB; others, one
  # piece per 20,000 documents
  # Several datasets mixed by weight: name -> mixture_source(weight, fields that differ from
  # this section's), e.g. web=mixture_source(0.7, dataset="c4/en"). Empty: one dataset.
  data.mixture = ml_collections.ConfigDict()
  data.tokenizer = ml_collections.ConfigDict()
  data.tokenizer.kind = "bpe"  # 'bpe' (byte-level), 'wordpiece' (BERT), 'char', or 'file'
  data.tokenizer.vocab_size = 8192  # bpe/wordpiece: size to train to
  data.tokenizer.path = ""  # file: a HF tokenizer.json or a BERT vocab.txt
  data.tokenizer.lowercase = True  # wordpiece / vocab.txt: uncased (BERT's default)
  data.tokenizer.eos_token = "<|endoftext|>"
  # bpe/wordpiece/char: train on a sample of at most this many characters of the train split,
  # spread over it (the first characters of 256 even stretches); all of a smaller split
  data.tokenizer.max_train_chars = 20_000_000
  return data


# The fields of config.data that describe one dataset (a mixture entry may set any of them).
SOURCE_FIELDS = (
  "dataset",
  "files",
  "doc_split",
  "validation_fraction",
  "split_by",
  "text_key",
  "jsonl_key",
  "skip_bad_shards",
  "train_split",
  "eval_split",
  "tokenized_dir",
  "prepare_pieces",
)


def mixture_source(weight, **fields):
  """One entry of config.data.mixture: its sampling weight and its dataset fields."""
  unknown = sorted(set(fields) - set(SOURCE_FIELDS))
  if unknown:
    raise ValueError(
      f"config.data.mixture: unknown fields {unknown}; use {', '.join(SOURCE_FIELDS)}"
    )
  return ml_collections.ConfigDict(dict(fields, weight=float(weight)))


def optimizer_config():
  opt = ml_collections.ConfigDict()
  opt.name = "adamw"  # 'adamw', 'lion' (b1, b2; a 3-10x smaller lr), 'muon' or
  # 'adafactor' (factored second moments, no momentum)
  opt.muon_momentum = 0.95  # muon: Nesterov momentum of the hidden matrices (the rest: AdamW)
  # lr multipliers per parameter group: token/position tables, the output head (vocabulary or
  # classes), hidden matrices (attention, MLP) and scalars (norm scales, biases)
  opt.lr_scale = ml_collections.ConfigDict(dict(embed=1.0, head=1.0, hidden=1.0, scalar=1.0))
  opt.lr = 6e-4
  opt.min_lr = 6e-5
  opt.schedule = "cosine"  # 'cosine', 'linear', 'constant' or 'wsd' after warmup
  opt.decay_fraction = 0.2  # wsd: cool down over this last share of the run ...
  opt.decay_shape = "linear"  # ... to min_lr, 'linear' or '1-sqrt'
  opt.decay_until = 1.0  # cosine, linear: the decay ends at this share of the run, then min_lr
  opt.warmup_steps = 100
  opt.warmup_fraction = 0.0  # > 0: warm up over this fraction of the run instead
  opt.b1 = 0.9
  opt.b2 = 0.95
  opt.eps = 1e-8
  opt.weight_decay = 0.1  # applied to matrices only (ndim >= 2)
  opt.grad_clip = 1.0  # global-norm clipping; 0 disables
  opt.mu_dtype = ""  # '' : float32 first moment; 'bfloat16' halves its memory
  return opt


def _batch_config():
  batch = ml_collections.ConfigDict()
  batch.size = 8  # global batch, in sequences
  batch.seq_len = 128
  batch.grad_accum = 1  # microbatches per optimizer step
  # Batch-size warmup: the batch grows linearly from warmup_start sequences (0: one microbatch)
  # to `size` over the first warmup_steps steps, in whole microbatches (needs grad_accum > 1):
  # the microbatches past the current size are not computed, and their rows are skipped.
  batch.warmup_steps = 0
  batch.warmup_start = 0
  return batch


def _mesh_config():
  mesh = ml_collections.ConfigDict()
  mesh.data = -1  # -1: whatever the other axes leave
  mesh.fsdp = 1
  mesh.sequence = 1  # context parallelism: activations split along the sequence
  mesh.tensor = 1
  mesh.rules = DEFAULT_RULES
  # Multi-slice / multi-node: how many slices (slow links) each axis spans; the sizes above are
  # totals. E.g. data=4, dcn.data=4 on 4 TPU slices: data parallel across slices, the rest within.
  mesh.dcn = ml_collections.ConfigDict(dict(data=1, fsdp=1, sequence=1, tensor=1))
  return mesh


def _train_config():
  train = ml_collections.ConfigDict()
  # The run's length: one of total_steps, total_tokens (> 0) or epochs (> 0: passes over the
  # training split); the others 0. On the command line, the one given replaces the file's.
  train.total_steps = 1000
  train.total_tokens = 0
  train.epochs = 0.0
  train.stop_at_step = 0  # > 0: stop there with a checkpoint (jobs of fixed length)
  train.log_every = 10
  train.eval_every = 200  # 0: only at the end; -1: after every epoch
  train.eval_batches = 8  # batches of each validation split per evaluation; 0: all
  # A non-finite loss or gradient: 'stop' with an error naming the step and the checkpoint to
  # resume from (nothing non-finite is ever saved), or 'skip' the update (counted as 'skipped').
  train.nan_policy = "stop"
  train.peak_flops = 0.0  # per-device peak FLOP/s for MFU; 0: look up or measure
  # The eval metric that ranks checkpoints (results.json; the best checkpoint, if kept).
  train.best_metric = "loss"
  train.best_mode = "min"  # 'min' or 'max'
  return train


def _checkpoint_config():
  checkpoint = ml_collections.ConfigDict()
  checkpoint.every = 500  # -1: after every epoch
  checkpoint.keep = 3
  checkpoint.async_save = True
  checkpoint.keep_best = False  # also keep the best checkpoint by train.best_metric in
  # <workdir>/best (a full second save when it improves)
  return checkpoint


def _wandb_config():
  # Weights & Biases logging from process 0, besides metrics.jsonl and TensorBoard. The run id
  # is kept in <workdir>/wandb_id.txt, so a resumed run continues the same W&B run.
  wandb = ml_collections.ConfigDict()
  wandb.enabled = False
  wandb.project = "pretrain"
  wandb.entity = ""  # '': the account's default entity
  wandb.group = ""  # '': none, or WANDB_RUN_GROUP from the environment (sweeps)
  wandb.name = ""  # '': the workdir's basename
  wandb.mode = ""  # '': WANDB_MODE or wandb's default; 'offline' logs to
  # <workdir>/wandb only (upload later with `wandb sync`)
  return wandb


def base_config():
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict()
  config.objective = "causal_lm"
  config.data = data_config()
  config.optimizer = optimizer_config()
  config.batch = _batch_config()
  config.mesh = _mesh_config()
  config.train = _train_config()
  config.checkpoint = _checkpoint_config()
  config.wandb = _wandb_config()
  config.init_from = ""  # a checkpoint directory to start from when workdir has none
  config.seed = 0
  return config
