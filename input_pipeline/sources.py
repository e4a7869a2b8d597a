"""Where text comes from: our local-text builder or any tfds text dataset in data_dir."""
import contextlib
import fcntl
import io
import logging
import os
import shutil

import ml_collections
import tensorflow_datasets as tfds

from input_pipeline import local_text, tokenizer
from pretrain import storage

DataError = local_text.DataError


class _QuietTfds(logging.Filter):
  """Drops two tfds warnings that every local_text run would print: its configs are all custom,
  and a dataset not yet prepared has no dataset_info.json."""

  def filter(self, record):
    message = str(record.getMessage())
    return not message.startswith(("Using custom data configuration", "Variant folder"))


logging.getLogger("absl").addFilter(_QuietTfds())


def _local(data):
  """Refuses a URL: entry points read a remote data_dir through its mirror (mirror.py)."""
  if storage.is_remote(data.data_dir):
    raise DataError(f"config.data.data_dir: {data.data_dir!r} is a URL, which this command "
                    "does not mirror; give a local directory (pretrain.train and "
                    "input_pipeline.prepare take a gs:// data_dir)")


def builder(data):
  """The tfds builder named by config.data (`data`); errors if it is not prepared/preparable."""
  _local(data)
  if data.dataset == "local_text":
    return local_text.LocalText(
        config=local_text.make_config(data.files, data.doc_split, data.validation_fraction,
                                      data.split_by, data.jsonl_key),
        data_dir=data.data_dir)
  if data.files:
    raise DataError(f"config.data.files: only used with dataset='local_text', not {data.dataset!r}")
  try:
    b = tfds.builder(data.dataset, data_dir=data.data_dir, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"config.data.dataset: {data.dataset!r} is not a tfds dataset ({e})") from None
  if not b.is_prepared():
    raise DataError(
        f"config.data.dataset: {data.dataset!r} is not prepared in data_dir "
        f"{os.path.abspath(data.data_dir)!r}; prepare it once with `tfds build {data.dataset} "
        f"--data_dir={data.data_dir}` on a machine with network access, then copy data_dir here")
  return b


def named(data):
  """The datasets of config.data (`data`): [(name, that dataset's data section, weight)].

  One dataset is named ''; a mixture's entries take config.data's fields, overridden by their
  own (configs.common.mixture_source). A tokenized_dir they inherit gets a subdirectory each."""
  if not data.mixture:
    return [("", data, 1.0)]
  out = []
  for name, entry in data.mixture.items():
    if not isinstance(entry, ml_collections.ConfigDict) or "weight" not in entry:
      raise DataError(f"config.data.mixture.{name}: give configs.common.mixture_source(weight, "
                      "fields that differ)")
    src = ml_collections.ConfigDict(data.to_dict())
    del src["mixture"]
    fields = entry.to_dict()
    weight = fields.pop("weight")
    if not weight > 0:
      raise DataError(f"config.data.mixture.{name}.weight: {weight}; give a weight > 0")
    for key, value in fields.items():
      if key not in src or key in ("tokenizer", "mlm"):
        raise DataError(f"config.data.mixture.{name}.{key}: not a dataset field")
      src[key] = value
    if "tokenized_dir" not in fields and data.tokenized_dir:
      src.tokenized_dir = os.path.join(data.tokenized_dir, name)
    out.append((name, src, float(weight)))
  return out


def builders(data):
  """tfds builders of every dataset of `data`, our local-text ones prepared (a no-op if done)."""
  _local(data)  # before the lock would make a directory of it
  out = {}
  for name, src, _ in named(data):
    if src.dataset != "local_text":
      out[name] = builder(src)
      continue
    with preparation_lock(src.data_dir):  # built inside: it sees what another process prepared
      out[name] = builder(src)
      prepare(out[name])
  return out


_LOCKS_HELD = set()


@contextlib.contextmanager
def preparation_lock(data_dir):
  """Holds an exclusive lock on <data_dir>/.prepare.lock (re-entrant within a process): runs
  started together on one data_dir (a sweep's trials) prepare and tokenize a dataset once, one
  after the other, instead of racing in tfds's rename of its incomplete directory or in the
  clean-up of each other's temporary files."""
  key = os.path.abspath(data_dir)
  if key in _LOCKS_HELD:
    yield
    return
  created = not os.path.exists(data_dir)
  os.makedirs(data_dir, exist_ok=True)
  path = os.path.join(data_dir, ".prepare.lock")
  with open(path, "a", encoding="utf-8") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    _LOCKS_HELD.add(key)
    try:
      yield
    except BaseException:
      if created:  # a failed preparation in a new data_dir leaves nothing behind
        os.remove(path)
        _remove_empty_dirs(data_dir)
      raise
    finally:
      _LOCKS_HELD.discard(key)
      fcntl.flock(f, fcntl.LOCK_UN)


def training_texts(datasets, builders, max_chars):
  """Text to train a tokenizer on: each dataset's train split, up to its weight's share."""
  total = sum(w for _, _, w in datasets)
  for name, src, weight in datasets:
    yield from tokenizer.limited(texts(builders[name], src.train_split, src.text_key),
                                 int(max_chars * weight / total))


def _remove_empty_dirs(top):
  """Removes the directories under `top` (and `top`) that hold no file, bottom up."""
  for d, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
    if not os.listdir(d):
      os.rmdir(d)


def prepare(b):
  """Prepares our own builder in its data_dir (a no-op once prepared). tfds's "Downloading
  and preparing" lines are noise for local files: one line of ours instead. A preparation
  that fails (no text in the files) leaves no empty directory behind."""
  if b.is_prepared():
    return
  tfds.disable_progress_bar()  # the trainer prints its own progress
  # data_dir/local_text/<config>/<version>: the directories this call creates.
  config_dir = os.path.dirname(b.data_dir)
  created = [d for d in (os.path.dirname(os.path.dirname(config_dir)),
                         os.path.dirname(config_dir), config_dir) if not os.path.exists(d)]
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      b.download_and_prepare(
          file_format="array_record",
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  except DataError:
    if config_dir in created:  # named by a hash of its inputs: all of it is this call's
      shutil.rmtree(config_dir, ignore_errors=True)
    for d in reversed(created):  # tfds's empty downloads/ too, if data_dir is new
      _remove_empty_dirs(d)
    raise
  print(f"prepared {b.info.full_name} ({b.builder_config.description}): "
        + ", ".join(f"{s.num_examples:,} {name} documents" for name, s in b.info.splits.items()),
        flush=True)


def check_split(b, split, text_key):
  """A clear error if `split` (a name, maybe sliced: 'train[:5%]') or `text_key` is not in
  the dataset."""
  name = split if isinstance(split, str) else split.split  # a tfds.even_splits part
  base = name.split("[")[0].split("+")[0]
  if base not in b.info.splits:
    has = ", ".join(b.info.splits)
    hint = ("; carve one out of train, e.g. --config.data.train_split='train[5%:]' "
            "--config.data.eval_split='train[:5%]'" if "train" in b.info.splits else "")
    raise DataError(f"config.data: split {split!r} is not in {b.name} (has {has}){hint}")
  if text_key not in b.info.features:
    raise DataError(f"config.data.text_key: {b.name} has no feature {text_key!r} "
                    f"(has {', '.join(b.info.features)})")


def texts(b, split, text_key, shard=(0, 1), stats=None):
  """Yields the text of every example in `split`, restricted to shard (index, count).

  Documents that are not valid UTF-8 or hold only whitespace are skipped, and counted in
  `stats` ('invalid_utf8', 'empty') when given.
  """
  check_split(b, split, text_key)
  stats = {"empty": 0, "invalid_utf8": 0} if stats is None else stats
  index, count = shard
  sub = tfds.even_splits(split, n=count)[index] if count > 1 else split
  if b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    values = (example[text_key] for example in b.as_data_source(split=sub))
  else:  # tfrecord-prepared datasets stream through tf.data
    values = (example[text_key]
              for example in tfds.as_numpy(b.as_dataset(split=sub, shuffle_files=False)))
  for value in values:
    try:
      text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
      stats["invalid_utf8"] += 1
      continue
    if not text.strip():
      stats["empty"] += 1
      continue
    yield text
