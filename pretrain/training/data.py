"""The datasets of a run: prepared, tokenized and turned into step-indexed loaders, shared out
over the processes (the trainer and `pretrain.evaluate` both read their data through here)."""

import contextlib
import os

import jax
import ml_collections
import tokenizers
from jax.experimental import multihost_utils

from input_pipeline import batches
from input_pipeline.corpora import mirror, sources, tokenized
from pretrain.objectives.objective import Objective


def _barrier(name):
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _first_process_first(fn):
  """fn() on process 0, then (after a barrier) on the others: they find its work done."""
  if jax.process_index() == 0:
    out = fn()
  _barrier(fn.__name__)
  return out if jax.process_index() == 0 else fn()


def load_data(
  config: ml_collections.ConfigDict,
  objective: Objective,
  tok: tokenizers.Tokenizer | None = None,
  train: bool = True,
):
  """Prepares and tokenizes every dataset (once) and builds the train loader (one dataset, or
  their Mixture; None without `train`) and one eval loader per dataset. Returns (tokenizer,
  train loader, {name: eval loader}, lines for the log). `tok`: the tokenizer to use (the
  run's own, to evaluate); by default config.data.tokenizer's, trained if it is a trained kind.
  Loaders are global: a process asks for its rows of each global batch. Process 0 does the
  shared work first; the processes share out the pieces to tokenize."""
  pidx, pcount = jax.process_index(), jax.process_count()
  remote = mirror.Mirror(config.data)  # unusable URLs fail here, before any work
  if objective.load_data is not None:  # a fine-tuning task: labelled examples
    return _task_data(config, objective, tok, train, remote, push=pidx == 0)
  data = remote.data  # a gs:// data_dir or tokenized_dir replaced by its local mirror

  def synced(dirs, fn, push=pidx == 0):
    """fn, run between a download of dirs() from a remote data_dir (every process: each host
    has its own disk) and an upload back (by process 0, which prepares first)."""
    return lambda: remote.synced(dirs(), fn, push)

  datasets = sources.named(data)
  shared = dict(process_index=pidx, process_count=pcount)
  log = (lambda message: print(message, flush=True)) if pidx == 0 else (lambda message: None)
  eval_only, mode = not train, tokenized.mode_for(data)
  # One process prepares under a lock, as other runs may share data_dir; a job's processes
  # take turns through barriers instead.
  with sources.preparation_lock(data.data_dir) if pcount == 1 else contextlib.nullcontext():
    built = _first_process_first(synced(remote.source_dirs, lambda: sources.builders(data)))
    split_dirs = lambda: remote.tokenized_dirs(built, tok, mode, eval_only)
    if tok is None:
      tok = _first_process_first(
        synced(remote.tokenizer_dirs, lambda: tokenized.tokenizer_for(data, built))
      )
    synced(
      split_dirs,
      lambda: tokenized.prepare_all(  # each uploads the pieces it tokenized
        data, mode, tok, built, eval_only, write_manifest=pcount == 1, log=log, **shared
      ),
      push=True,
    )()
  _barrier("pieces tokenized")
  if pcount > 1:
    _first_process_first(
      synced(split_dirs, lambda: tokenized.prepare_all(data, mode, tok, built, eval_only))
    )
  opened = {
    (name, split): tokenized.open_split(src, built[name], split, tok, mode)
    for name, src, split in tokenized.splits(data, eval_only)
  }
  _build_examples(config, objective, datasets, opened, tok, data, eval_only, shared,
                  lambda fn, push: synced(split_dirs, fn, push))  # fmt: skip
  _barrier("examples built")
  if pcount > 1:  # the other processes' pieces
    synced(split_dirs, lambda: None, push=False)()

  return _loaders(config, objective, datasets, opened, tok, data.shuffle, eval_only)


def _build_examples(config, objective, datasets, opened, tok, data, eval_only, shared, synced):
  """BERT's pairs (objective.build), each process its pieces, beside the splits; `synced`
  is the split directories' sync around a function (a remote data_dir's mirror)."""
  index = {name: k for k, (name, _, _) in enumerate(datasets)}
  synced(
    lambda: [  # BERT's pairs, each process its pieces, beside the splits
      objective.build(
        opened[name, split],
        src,
        tok,
        seq_len=config.batch.seq_len,
        seed=[config.seed, index[name]],
        **shared,
      )
      for name, src, split in tokenized.splits(data, eval_only)
    ],
    push=True,
  )()


def _loaders(config, objective, datasets, opened, tok, shuffle_train, eval_only):
  """(tokenizer, train loader: one dataset's or their Mixture, None when eval_only, {name: eval
  loader}, lines for the log) over the opened splits."""
  train_loaders, val, notes = {}, {}, []
  for k, (name, src, _) in enumerate(datasets):
    kw = dict(batch_size=config.batch.size, seq_len=config.batch.seq_len, seed=[config.seed, k])
    for split, shuffle, out in (
      (src.train_split, shuffle_train, train_loaders),
      (src.eval_split, False, val),
    )[eval_only:]:
      out[name] = objective.load(opened[name, split], src, tok, shuffle=shuffle, **kw)
      notes.append(
        f"data{' ' + name if name else ''}: {opened[name, split].summary()}"
        + (f"; {out[name].note}" if out[name].note else "")
      )
  if eval_only:
    return tok, None, val, notes
  if len(train_loaders) > 1:
    return (
      tok,
      batches.Mixture(train_loaders, {name: w for name, _, w in datasets}, config.batch.size),
      val,
      notes,
    )
  return tok, train_loaders[""], val, notes


def _task_data(config, objective, tok, train, remote, push):
  """A fine-tuning task's data (objective.load_data); a remote data_dir through its mirror:
  the task's tfds dataset, tokenizers/ and the encoded examples' cache (finetune/)."""
  if not remote.roots:
    return objective.load_data(config, tok, train)
  config = ml_collections.ConfigDict(config.to_dict())
  config.data = remote.data
  dirs = (
    remote.source_dirs()
    + remote.tokenizer_dirs()
    + [(os.path.join(remote.data.data_dir, "finetune"), None)]
  )
  return remote.synced(dirs, lambda: objective.load_data(config, tok, train), push)
