"""Where text comes from: our local-text builder or any tfds text dataset in data_dir."""

import contextlib
import fcntl
import io
import itertools
import logging
import os
import queue
import shutil
import threading

import ml_collections
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import dtype_utils

from input_pipeline import tokenizer
from input_pipeline.corpora import local_text
from pretrain.ground import storage

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
    raise DataError(
      f"config.data.data_dir: {data.data_dir!r} is a URL, which this command "
      "does not mirror; give a local directory (pretrain.train and "
      "input_pipeline.prepare take a gs:// data_dir)"
    )


def builder(data):
  """The tfds builder named by config.data (`data`); errors if it is not prepared/preparable."""
  _local(data)
  if data.dataset == "local_text":
    return local_text.LocalText(
      config=local_text.config_of(data),
      data_dir=data.data_dir,
    )
  if data.files:
    raise DataError(f"config.data.files: only used with dataset='local_text', not {data.dataset!r}")
  try:
    b = tfds.builder(data.dataset, data_dir=data.data_dir, try_gcs=False)
  except Exception as e:
    raise DataError(f"config.data.dataset: {data.dataset!r} is not a tfds dataset ({e})") from None
  if not b.is_prepared():
    raise DataError(
      f"config.data.dataset: {data.dataset!r} is not prepared in data_dir "
      f"{os.path.abspath(data.data_dir)!r}; prepare it once with `tfds build {data.dataset} "
      f"--data_dir={data.data_dir}` on a machine with network access, then copy data_dir here"
    )
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
      raise DataError(
        f"config.data.mixture.{name}: give configs.common.mixture_source(weight, "
        "fields that differ)"
      )
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
      out[name] = b = builder(src)
      if all(streamed(b, split) for split in (src.train_split, src.eval_split)):
        local_text.check_documents(b.builder_config)  # tokenized straight from the files
      else:
        prepare(b)
  return out


def streamed(b, split):
  """Whether `split` of `b` is read straight from our local-text builder's files, shard by
  shard, not from a tfds copy of them (local_text.streams_shards)."""
  return isinstance(b, local_text.LocalText) and local_text.streams_shards(
    b.builder_config, split if isinstance(split, str) else split.split
  )


def num_shard_groups(b, pieces):
  """How many pieces a streamed split is prepared in: `pieces` runs of its shards (0: about
  one per local_text.PIECE_BYTES of files)."""
  return len(local_text.shard_groups(b.builder_config, pieces))


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
  created = [
    d
    for d in (os.path.dirname(os.path.dirname(config_dir)), os.path.dirname(config_dir), config_dir)
    if not os.path.exists(d)
  ]
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      b.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
      )
  except DataError:
    if config_dir in created:  # named by a hash of its inputs: all of it is this call's
      shutil.rmtree(config_dir, ignore_errors=True)
    for d in reversed(created):  # tfds's empty downloads/ too, if data_dir is new
      _remove_empty_dirs(d)
    raise
  print(
    f"prepared {b.info.full_name} ({b.builder_config.description}): "
    + ", ".join(f"{s.num_examples:,} {name} documents" for name, s in b.info.splits.items()),
    flush=True,
  )


def check_split(b, split, text_key):
  """A clear error if `split` (a name, maybe sliced: 'train[:5%]') or `text_key` is not in
  the dataset."""
  name = split if isinstance(split, str) else split.split  # a tfds.even_splits part
  base = name.split("[")[0].split("+")[0]
  if base not in b.info.splits and not streamed(b, split):
    has = ", ".join(b.info.splits)
    hint = (
      "; carve one out of train, e.g. --config.data.train_split='train[5%:]' "
      "--config.data.eval_split='train[:5%]'"
      if "train" in b.info.splits
      else ""
    )
    raise DataError(f"config.data: split {split!r} is not in {b.name} (has {has}){hint}")
  if text_key not in b.info.features:
    raise DataError(
      f"config.data.text_key: {b.name} has no feature {text_key!r} "
      f"(has {', '.join(b.info.features)})"
    )


READ_BATCH = 4096  # records per batched read


def _text_parser(b, text_key):
  """A function from a stored record (a serialized tf.train.Example) to the value of the text
  feature, or None where the feature is not one string (then tfds decodes whole examples).
  Parsing only the text is about twice as fast as tfds's decoding of every feature."""
  feature = b.info.features[text_key] if text_key in b.info.features else None
  info = feature.get_tensor_info() if feature is not None else None
  if info is None or info.shape or not dtype_utils.is_string(info.np_dtype):
    return None
  try:
    from tensorflow_datasets.proto import tf_example_pb2
  except ImportError:
    return None
  parse = tf_example_pb2.Example.FromString

  def value(record):
    return parse(record).features.feature[text_key].bytes_list.value[0]

  return value


class RecordTexts:
  """Random access, in batches, to the text feature of a split stored as ArrayRecord (values as
  stored: bytes, or str)."""

  def __init__(self, b, split, text_key):
    self.text_key = text_key
    parser = _text_parser(b, text_key)
    raw = tfds.decode.DeserializeMethod.RAW_BYTES
    self.source = b.as_data_source(split=split, **({"deserialize_method": raw} if parser else {}))
    self.parser = parser
    if parser and len(self.source):  # the shortcut must read what tfds's decoding reads
      try:
        same = parser(self.source[0]) == b.as_data_source(split=split)[0][text_key]
      except Exception:
        same = False
      if not same:
        self.source, self.parser = b.as_data_source(split=split), None

  def __len__(self):
    return len(self.source)

  def read(self, start, stop):
    """The values of records [start, stop)."""
    records = self.source.__getitems__(list(range(start, stop)))
    if self.parser:
      return [self.parser(r) for r in records]
    return [r[self.text_key] for r in records]


def random_access(b):
  """Whether the dataset's records can be read by index (ArrayRecord), not only streamed."""
  return b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD


def _decode(values, stats):
  """Values -> the texts among them; invalid UTF-8 and whitespace-only ones counted in stats."""
  out = []
  for value in values:
    if isinstance(value, bytes):
      try:
        value = value.decode("utf-8")
      except UnicodeDecodeError:
        stats["invalid_utf8"] += 1
        continue
    elif not isinstance(value, str):
      value = str(value)
    if not value or value.isspace():
      stats["empty"] += 1
      continue
    out.append(value)
  return out


def text_batches(b, split, text_key, shard=(0, 1), stats=None, batch=READ_BATCH):
  """Yields the texts of `split` (restricted to shard (index, count)) as lists of up to `batch`
  texts, in order, read `batch` records at a time.

  Documents that are not valid UTF-8 or hold only whitespace are skipped, and counted in
  `stats` ('invalid_utf8', 'empty') when given.
  """
  check_split(b, split, text_key)
  stats = {"empty": 0, "invalid_utf8": 0} if stats is None else stats
  index, count = shard
  if streamed(b, split):
    yield from _shard_batches(b.builder_config, split, index, count, stats, batch)
    return
  sub = tfds.even_splits(split, n=count)[index] if count > 1 else split
  if random_access(b):
    records = RecordTexts(b, sub, text_key)
    for start in range(0, len(records), batch):
      texts = _decode(records.read(start, min(start + batch, len(records))), stats)
      if texts:
        yield texts
    return
  # tfrecord-prepared datasets stream through tf.data
  values = (
    example[text_key] for example in tfds.as_numpy(b.as_dataset(split=sub, shuffle_files=False))
  )
  while True:
    chunk = list(itertools.islice(values, batch))
    if not chunk:
      return
    texts = _decode(chunk, stats)
    if texts:
      yield texts


def _shard_batches(cfg, split, index, count, stats, batch):
  """text_batches of a streamed split: the documents of the index-th of `count` runs of its
  shards."""
  groups = local_text.shard_groups(cfg, count)
  files = groups[index] if index < len(groups) else []
  docs = (text for _, text in local_text.split_documents(cfg, split, files, stats))
  while chunk := list(itertools.islice(docs, batch)):
    yield chunk


def texts(b, split, text_key, shard=(0, 1), stats=None):
  """Yields the text of every example in `split`, restricted to shard (index, count), as
  text_batches does (the same documents skipped and counted), reading ahead."""
  for batch in read_ahead(text_batches(b, split, text_key, shard, stats)):
    yield from batch


def read_ahead(items, depth=2):
  """Yields what `items` yields, which a thread of its own produces up to `depth` items ahead:
  the next batch of records is read and decoded while the tokenizer (which lets go of
  Python's lock) encodes this one. An error in the thread is raised here."""
  ready, stop, end = queue.Queue(depth), threading.Event(), object()

  def put(item):
    while not stop.is_set():
      try:
        return ready.put(item, timeout=0.1)
      except queue.Full:
        pass

  def produce():
    try:
      for item in items:
        if stop.is_set():
          return
        put(item)
      put(end)
    except BaseException as e:
      put(e)

  threading.Thread(target=produce, daemon=True).start()
  try:
    while (item := ready.get()) is not end:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()  # the consumer stopped early: the thread stops at its next item


SAMPLE_PARTS = 256  # stretches a tokenizer's training sample is spread over ...
STREAMED_SAMPLE_PARTS = 16  # ... (over 16 when the dataset can only be streamed: tfrecord)
MIN_SAMPLE_PART_CHARS = 4096  # fewer stretches when the sample is small


def training_texts(datasets, builders, max_chars):
  """Text to train a tokenizer on: each dataset's train split, up to its weight's share of
  max_chars, as sample_texts takes it."""
  total = sum(w for _, _, w in datasets)
  for name, src, weight in datasets:
    yield from sample_texts(
      builders[name], src.train_split, src.text_key, int(max_chars * weight / total)
    )


def _read_range(records, start, stop, stats, size):
  """The texts of records [start, stop), read `size` records at first, then twice as many each
  time (a sample usually needs little more than the first read of each stretch)."""
  while start < stop:
    end = min(stop, start + size)
    yield from _decode(records.read(start, end), stats)
    start, size = end, min(2 * size, READ_BATCH)


def _record_size(b, split):
  """The average size of a record of `split` in bytes (0 if unknown), from the dataset's info."""
  name = split if isinstance(split, str) else split.split  # a tfds.even_splits part
  try:
    info = b.info.splits[name.split("[")[0].split("+")[0]]
    return info.num_bytes / info.num_examples if info.num_examples else 0
  except Exception:
    return 0


def sample_texts(b, split, text_key, max_chars):
  """A sample of at most max_chars characters of `split`, spread over it: the split is cut into
  SAMPLE_PARTS even stretches of documents and the sample takes the first documents of each,
  an equal share of the characters each (tokenizer.spread_sample); the whole split, in order,
  when it holds at most max_chars. Deterministic; reads little more than the sample."""
  check_split(b, split, text_key)
  stats = {"empty": 0, "invalid_utf8": 0}
  if streamed(b, split):  # the first documents of SAMPLE_PARTS shards spread over the corpus
    cfg = b.builder_config
    parts = min(len(cfg.files), SAMPLE_PARTS)
    stretches = [
      (
        t
        for _, t in local_text.split_documents(
          cfg, split, [cfg.files[k * len(cfg.files) // parts]], stats
        )
      )
      for k in range(parts)
    ]
  elif random_access(b):
    records = RecordTexts(b, split, text_key)
    n = len(records)
    parts = max(1, min(n, SAMPLE_PARTS, max_chars // MIN_SAMPLE_PART_CHARS))
    bounds = [k * n // parts for k in range(parts + 1)]
    # the first read of a stretch: its share's worth of records, and a quarter more
    record = _record_size(b, split)
    size = max(64, min(READ_BATCH, int(max_chars / parts / record * 1.25) + 1 if record else 0))
    stretches = [_read_range(records, bounds[k], bounds[k + 1], stats, size) for k in range(parts)]
  else:
    n = b.info.splits[split].num_examples
    parts = max(1, min(n, STREAMED_SAMPLE_PARTS, max_chars // MIN_SAMPLE_PART_CHARS))
    stretches = [
      texts(b, part, text_key, stats=stats)
      for part in (tfds.even_splits(split, n=parts) if parts > 1 else [split])
    ]
  return tokenizer.spread_sample(stretches, max_chars)
