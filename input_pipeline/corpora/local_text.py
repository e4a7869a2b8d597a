"""A tfds builder over local text files and record shards (paths or globs).

Text files (.txt and the like, optionally .gz): a document is a whole file or a
blank-line-separated block (`doc_split`). Records, one document each, with the text in the
field or column `jsonl_key`: JSON lines (.jsonl, .jsonl.gz, .jsonl.zst: Dolma, the Pile),
Parquet (.parquet: FineWeb, DCLM, The Stack; read a row group at a time, never whole) and Arrow
dataset folders (what `datasets.Dataset.save_to_disk` writes: its .arrow stream files). The train/validation
split is deterministic: by a hash of each document's text (`split_by='hash'`, stable when files
are added), or the last `validation_fraction` of the characters (`split_by='tail'`, nanoGPT's
split). With no files, the corpus is the English documentation that ships inside every CPython
install (`pydoc_data.topics`, one document per topic), so the quickstart runs offline.

Each distinct set of inputs is its own builder config (named by a hash of the inputs), so
preparing a new corpus never touches an old one in the same data_dir. Files split by hash are
read straight from their shards when they are tokenized (streams_shards, split_documents: a
row group or a line at a time, each worker its own shards); the builder writes a tfds copy of
the text only for split_by='tail' (which needs the whole corpus's length) or sliced splits.
"""

import dataclasses
import glob
import hashlib
import itertools
import json
import os

import tensorflow_datasets as tfds

from input_pipeline.corpora import records
from pretrain.ground import errors, storage

DEFAULT_CORPUS = "pydoc_topics"


DataError = records.DataError


def _patterns(files):
  """config.data.files' comma-separated paths or globs (or a list of them) as a list."""
  return (
    [p.strip() for p in files.split(",") if p.strip()] if isinstance(files, str) else list(files)
  )


def expand_files(files):
  """Comma-separated paths or globs -> files (each pattern's matches sorted, in pattern order,
  without repeats); errors name the field."""
  patterns = _patterns(files)
  found = []
  for pattern in patterns:
    matches = _matches(pattern)
    if not matches:
      raise DataError(
        f"config.data.files: no file matches {pattern!r}; give existing paths or globs"
      )
    for match in matches:
      found.extend(_arrow_files(match) if storage.isdir(match) else [match])
  if patterns and not found:
    raise DataError(f"config.data.files: {files!r} names no regular files")
  return list(dict.fromkeys(found))  # a file matched by two patterns is read once


def _matches(pattern):
  """A pattern's files, sorted: local, or in a bucket (gs://bucket/shards/*.parquet)."""
  if not storage.is_remote(pattern):
    return sorted(glob.glob(os.path.expanduser(pattern)))
  storage.check(pattern.split("*")[0].rsplit("/", 1)[0], "config.data.files")
  fs, name = storage.filesystem(pattern)
  scheme = pattern.split("://", 1)[0]
  return sorted(f"{scheme}://{p}" for p in fs.glob(name))


def _arrow_files(folder):
  """The .arrow files of a dataset folder (`datasets`' save_to_disk), in order; none elsewhere."""
  return _matches(folder.rstrip("/") + "/*.arrow")


def _identity(path, roots):
  """What names a file in the dataset's name: its path under the root of the pattern that
  matched it (not where this host keeps the corpus), its size and its modification time (a
  bucket object's generation), so that hosts with the same corpus share one prepared copy."""
  root = next((r for r in roots if path.startswith(r)), "")
  if storage.is_remote(path):
    fs, name = storage.filesystem(path)
    info = fs.info(name)
    return [path[len(root) :], info["size"], str(info.get("generation") or info.get("mtime"))]
  return [path[len(root) :], os.path.getsize(path), os.path.getmtime(path)]


def _roots(files):
  """The directory before the first wildcard of each pattern, longest first."""
  patterns = _patterns(files)
  roots = {
    (p if storage.is_remote(p) else os.path.abspath(os.path.expanduser(p))).split("*")[0]
    for p in patterns
  }
  return sorted((r.rsplit("/", 1)[0] + "/" for r in roots), key=len, reverse=True)


def _read_file(path, jsonl_key, stats):
  """Yields the documents of one file as bytes: a whole text file, or one per record."""
  if path.endswith(".parquet"):
    yield from records.parquet_texts(path, jsonl_key)
  elif path.endswith(".arrow"):
    yield from records.arrow_texts(path, jsonl_key)
  elif path.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
    yield from _jsonl_texts(path, jsonl_key, stats)
  else:
    with records.opened(path) as f:
      yield f.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # universal newlines


def _jsonl_texts(path, jsonl_key, stats):
  """The `jsonl_key` field of each JSON line. Unreadable lines (bad JSON, no `jsonl_key`) are
  skipped and counted in `stats`."""
  good = bad = 0
  for line in records.lines(path):
    if not line.strip():
      continue
    try:
      text = json.loads(line)[jsonl_key]
    except (ValueError, KeyError, TypeError):
      bad += 1
      continue
    good += 1
    yield text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else b""
  if bad and not good:
    raise DataError(
      f"config.data.jsonl_key: no line of {path} is a JSON object with field "
      f"{jsonl_key!r} ({bad} lines); set the field holding the text"
    )
  stats["bad_jsonl_lines"] += bad


def _shard_texts(files, jsonl_key, stats, skip_bad_shards):
  """(path, raw text) of every file in order; with `skip_bad_shards`, a damaged shard (an
  unreadable Parquet or Arrow file, a cut-short or foreign .zst) is skipped from where it
  fails, named in a warning and counted in `stats['bad_shards']`, instead of stopping."""
  for path in files:
    try:
      for text in _read_file(path, jsonl_key, stats):
        yield path, text
    except records.DataError as e:
      if not (skip_bad_shards and str(e).startswith("config.data.files:")):
        raise
      errors.warn(f"data.skip_bad_shards: skipped {path} ({str(e).split(': ', 1)[1]})")
      stats["bad_shards"] += 1


def read_documents(files, doc_split, jsonl_key, stats=None, skip_bad_shards=False):
  """Yields (key, text) for every non-empty, valid UTF-8 document, in a fixed order; what is
  skipped is counted in `stats` ('invalid_utf8', 'empty', 'bad_jsonl_lines', 'bad_shards')."""
  stats = {} if stats is None else stats
  for key in ("invalid_utf8", "empty", "bad_jsonl_lines", "bad_shards"):
    stats.setdefault(key, 0)
  if files:
    sources = _shard_texts(files, jsonl_key, stats, skip_bad_shards)
  else:
    import pydoc_data.topics

    sources = ((k, v.encode()) for k, v in sorted(pydoc_data.topics.topics.items()))
  for i, (name, raw) in enumerate(sources):
    if b"\0" in raw:  # a binary file (text holds no NUL bytes): skipped whole, not cut up
      stats["invalid_utf8"] += 1
      continue
    blocks = raw.split(b"\n\n") if doc_split == "blank_line" else [raw]
    for j, block in enumerate(blocks):
      try:
        text = block.decode("utf-8")
      except UnicodeDecodeError:
        stats["invalid_utf8"] += 1
        continue
      if text.strip():
        yield f"{i}:{name}:{j}", text
      elif doc_split == "file":  # (blank-line blocks are spacing, not documents)
        stats["empty"] += 1


SPLITS = ("train", "validation")


def in_validation(text, fraction):
  """split_by='hash': whether a document is in the validation split, by a hash of its text."""
  return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def streams_shards(cfg, split):
  """Whether `split` of a builder config is read straight from its files, shard by shard, with
  no tfds copy of the text: files split by hash, and a split named whole ('train', not
  'train[:5%]')."""
  return bool(cfg.files) and cfg.split_by == "hash" and split in SPLITS


PIECE_BYTES = 64 << 20  # a streamed split's automatic pieces: about one per this many bytes


def shard_groups(cfg, pieces=0):
  """cfg's files in runs of consecutive shards of about equal bytes: the pieces a streamed
  split is prepared in, `pieces` of them (0: one per PIECE_BYTES of files), never more than
  there are shards, and never cutting a shard."""
  files, sizes = cfg.files, cfg.sizes or (1,) * len(cfg.files)
  total = max(1, sum(sizes))
  n = max(1, min(len(files), pieces or -(-total // PIECE_BYTES)))
  if n == len(files):
    return [[path] for path in files]
  starts = itertools.accumulate(sizes, initial=0)
  groups = {}
  for path, start, size in zip(files, starts, sizes):  # by where the shard's middle falls
    groups.setdefault((2 * start + size) * n // (2 * total), []).append(path)
  return list(groups.values())


def split_documents(cfg, split, files=None, stats=None):
  """(key, text) of the documents of `split` in `files` (all of cfg's by default), in order,
  streamed: a file's row group, line or block at a time, whatever the file's size."""
  validation = split == "validation"
  docs = read_documents(
    cfg.files if files is None else files, cfg.doc_split, cfg.jsonl_key, stats, cfg.skip_bad_shards
  )
  for key, text in docs:
    if in_validation(text, cfg.validation_fraction) == validation:
      yield key, text


def check_documents(cfg):
  """The errors of a corpus with no documents, or none in one split, raised after reading only
  as far as the first document of each split (a few, on any corpus with text)."""
  stats, seen, count = {}, set(), 0
  for _, text in read_documents(
    cfg.files, cfg.doc_split, cfg.jsonl_key, stats, cfg.skip_bad_shards
  ):
    count += 1
    seen.add(in_validation(text, cfg.validation_fraction))
    if len(seen) == 2:
      return
  if not count:
    raise _no_documents(cfg, stats)
  raise _one_split_empty(count, "train" if True in seen else "validation")


def _no_documents(cfg, stats):
  first = cfg.files[0] if cfg.files else DEFAULT_CORPUS
  if stats["invalid_utf8"]:
    more = stats["invalid_utf8"] - 1
    return DataError(
      f"config.data.files: {first}{f' and {more} more' if more else ''} "
      "not UTF-8 text (binary?) and nothing else to read; give text files"
    )
  return DataError("config.data.files: the files contain no text; give non-empty files")


def _one_split_empty(count, split):
  return DataError(
    f"config.data.validation_fraction: {count} documents leave an empty {split} split; add "
    "documents or use split_by='tail'"
  )


def _warn_skipped(stats):
  if any(stats.values()):
    errors.warn(
      "local_text: skipped "
      + ", ".join(
        f"{n} {k.replace('_', ' ')}{' documents' if not k.startswith('bad_') else ''}"
        for k, n in stats.items()
        if n
      )
    )


@dataclasses.dataclass
class LocalTextConfig(tfds.core.BuilderConfig):
  files: tuple = ()
  doc_split: str = "file"
  validation_fraction: float = 0.05
  split_by: str = "hash"
  jsonl_key: str = "text"
  skip_bad_shards: bool = False
  sizes: tuple = ()  # the files' sizes in bytes


def config_of(data):
  """The builder config of a config.data section (or a mixture's entry)."""
  return make_config(
    data.files,
    data.doc_split,
    data.validation_fraction,
    data.split_by,
    data.jsonl_key,
    skip_bad_shards=data.get("skip_bad_shards", False),
  )


def make_config(
  files="",
  doc_split="file",
  validation_fraction=0.05,
  split_by="hash",
  jsonl_key="text",
  skip_bad_shards=False,
):
  """A builder config named after a hash of its inputs (the files' identities, _identity, and
  the options)."""
  if doc_split not in ("file", "blank_line"):
    raise DataError(f"config.data.doc_split: {doc_split!r}; use 'file' or 'blank_line'")
  if split_by not in ("hash", "tail"):
    raise DataError(f"config.data.split_by: {split_by!r}; use 'hash' or 'tail'")
  if not 0 < validation_fraction < 1:
    raise DataError(f"config.data.validation_fraction: {validation_fraction} must be in (0, 1)")
  paths = tuple(p if storage.is_remote(p) else os.path.abspath(p) for p in expand_files(files))
  roots = _roots(files) if paths else []
  stamp = [_identity(p, roots) for p in paths]
  options = [doc_split, validation_fraction, split_by, jsonl_key] + (
    ["skip"] if skip_bad_shards else []
  )
  digest = hashlib.sha256(json.dumps([stamp, options]).encode()).hexdigest()[:12]
  name = f"{'files' if paths else DEFAULT_CORPUS}_{digest}"
  return LocalTextConfig(
    name=name,
    files=paths,
    doc_split=doc_split,
    validation_fraction=validation_fraction,
    split_by=split_by,
    jsonl_key=jsonl_key,
    skip_bad_shards=skip_bad_shards,
    sizes=tuple(size for _, size, _ in stamp),
    description=f"{len(paths)} files" if paths else "CPython pydoc topics",
  )


class LocalText(tfds.core.GeneratorBasedBuilder):
  """Local text files as a tfds dataset with 'train' and 'validation' splits."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = []

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({"text": tfds.features.Text()}), supervised_keys=None
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    cfg = self.builder_config
    if cfg.split_by == "hash":  # streamed: each split reads the files once more
      check_documents(cfg)
      stats = {}
      return {
        "train": self._generate_examples(split_documents(cfg, "train", stats=stats), stats),
        "validation": self._generate_examples(split_documents(cfg, "validation")),
      }
    stats = {}
    docs = list(read_documents(cfg.files, cfg.doc_split, cfg.jsonl_key, stats, cfg.skip_bad_shards))
    _warn_skipped(stats)
    if not docs:
      raise _no_documents(cfg, stats)
    train, validation = [], []
    total = sum(len(text) for _, text in docs)
    cut, seen = int(total * (1 - cfg.validation_fraction)), 0
    for key, text in docs:
      head = max(0, min(len(text), cut - seen))
      if head:
        train.append((key, text[:head]))
      if head < len(text):
        validation.append((key, text[head:]))
      seen += len(text)
    if not train or not validation:
      raise _one_split_empty(len(docs), "train" if not train else "validation")
    return {
      "train": self._generate_examples(train),
      "validation": self._generate_examples(validation),
    }

  def _generate_examples(self, docs, stats=None):
    for key, text in docs:
      yield key, {"text": text}
    if stats is not None:  # read to the end: what was skipped
      _warn_skipped(stats)
