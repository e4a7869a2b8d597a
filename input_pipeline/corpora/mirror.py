"""A data_dir or tokenized_dir on object storage (`gs://bucket/data`), used through a local
mirror.

tfds's ArrayRecord reads, memory-mapped token files and the preparation lock need local files,
so a remote directory is mirrored at <cache_dir>/<scheme>/<bucket>/<path> (config.data.cache_dir;
'': $PRETRAIN_CACHE_DIR, else ~/.cache/pretrain) and every step of preparation runs on the
mirror exactly as on a local data_dir. `Mirror.synced(dirs, fn)` runs one step between

  a pull: files under `dirs` that the remote holds and the mirror lacks, or holds at another
          size, are downloaded (each to a temporary file renamed into place), and
  a push: files under `dirs` that the remote lacks, or holds at another size, are uploaded
          (lock and temporary files, and tfds's incomplete.* directories, are not).

`dirs` are only what the step needs: each dataset's tfds directory, tokenizers/, and the
tokenized splits of the run (with BERT's examples) - never the rest of data_dir (tfds's
downloads/, other corpora, other tokenizers' copies). Completion marks travel after the files
they vouch for, both ways, so a half-copied directory is never taken as complete: a tfds
directory is pulled only once its dataset_info.json is there (tfds's mark of a prepared
dataset), a piece's files only with the piece's .json, and a split's manifest.json comes last.
Outputs are deterministic, so two jobs that prepare the same data at once upload the same bytes.

With several processes (pretrain/training/data.py), each mirrors into its own cache (its host's disk):
process 0 prepares and uploads first, the others download after the barrier; each uploads the
pieces it tokenizes, and process 0 downloads them all to write the manifest.

Local directories have no mirror: `Mirror(data).data` is `data` itself and nothing is copied.
"""

import os
import re

import ml_collections

from input_pipeline.corpora import local_text, sources, tokenized
from pretrain.ground import errors, storage

_LAST = ("dataset_info.json", "manifest.json")  # a tfds dataset's and a tokenized split's marks
_PIECE = re.compile(r"(piece-\d+(?:-of-\d+)?)\.")  # a piece's files; its .json marks it done


def remote_fields(data):
  """(field name, URL) of every remote directory of config.data (`data`)."""
  fields = [("data_dir", data.data_dir), ("tokenized_dir", data.tokenized_dir)]
  fields += [
    (f"mixture.{name}.tokenized_dir", entry.tokenized_dir)
    for name, entry in data.mixture.items()
    if isinstance(entry, ml_collections.ConfigDict) and "tokenized_dir" in entry
  ]
  return [(field, url) for field, url in fields if storage.is_remote(url)]


def cache_root(data):
  """Where remote directories are mirrored: config.data.cache_dir, $PRETRAIN_CACHE_DIR or
  ~/.cache/pretrain."""
  # .get: a run's config.json from before the field (pretrain.evaluate reads it back).
  root = data.get("cache_dir", "") or os.environ.get("PRETRAIN_CACHE_DIR") or "~/.cache/pretrain"
  return os.path.abspath(os.path.expanduser(root))


def check(data):
  """One-line errors, before any work, for remote directories that cannot be used."""
  fields = remote_fields(data)
  for field, url in fields:
    storage.check(url, f"config.data.{field}")
  if fields and storage.is_remote(cache_root(data)):
    raise errors.UserError(
      f"config.data.cache_dir: {data.cache_dir!r} is a URL; give a local "
      "directory to mirror the remote data_dir in"
    )


def local_path(url, root):
  """gs://bucket/a/b -> <root>/gs/bucket/a/b."""
  scheme, rest = url.split("://", 1)
  return os.path.join(root, scheme, *[part for part in rest.split("/") if part])


class Mirror:
  """config.data (`data`) with its remote directories replaced by local mirrors (`.data`), and
  the copying between them."""

  def __init__(self, data):
    check(data)
    self.data, self.roots = data, {}  # roots: local mirror -> URL
    fields = remote_fields(data)
    if not fields:
      return
    self.data = ml_collections.ConfigDict(data.to_dict())
    for field, url in fields:
      *keys, leaf = field.split(".")
      node = self.data
      for key in keys:
        node = node[key]
      node[leaf] = local_path(url.rstrip("/"), cache_root(data))
      self.roots[node[leaf]] = url.rstrip("/")

  def url(self, local):
    """The URL a path under a mirror stands for; any other path as it is."""
    for root, url in self.roots.items():
      if local == root or local.startswith(root + os.sep):
        return url + local[len(root) :].replace(os.sep, "/")
    return local

  def synced(self, dirs, fn, push=True):
    """fn(), between a pull of `dirs` ([(local directory, marker or None)]; with a marker,
    only directories holding that file are pulled) and, with `push`, a push back."""
    dirs = [(d, marker) for d, marker in dirs if self.url(d) != d]
    for d, marker in dirs:
      pull(self.url(d), d, marker)
    out = fn()
    if push:
      for d, _ in dirs:
        push_dir(d, self.url(d))
    return out

  # The directories one step of preparation reads and writes (none without a remote one).

  def source_dirs(self):
    """Each dataset's tfds directory in data_dir."""
    return (
      [
        (os.path.join(self.data.data_dir, dataset_dir(src)), "dataset_info.json")
        for _, src, _ in sources.named(self.data)
      ]
      if self.roots
      else []
    )

  def tokenizer_dirs(self):
    return [(os.path.join(self.data.data_dir, "tokenizers"), None)] if self.roots else []

  def tokenized_dirs(self, built, tok, mode, eval_only=False):
    """The directory of every tokenized split the run reads (BERT's examples inside)."""
    return (
      [
        (tokenized.directory(src, built[name], split, mode, tok), None)
        for name, src, split in tokenized.splits(self.data, eval_only)
      ]
      if self.roots
      else []
    )


def dataset_dir(src):
  """Where a dataset's tfds versions live, relative to data_dir: local_text/<config> for
  ours, the tfds name without its version for others ('c4/en:3.0.1' -> c4/en)."""
  if src.dataset == "local_text":
    config = local_text.config_of(src)
    return os.path.join("local_text", config.name)
  return os.path.join(*src.dataset.split(":")[0].split("/"))


def _transient(name):
  """Lock files, temporary files and tfds's incomplete.* directories: never copied."""
  return name.startswith((".", "incomplete.")) or name.endswith((".tmp", ".lock"))


def _order(path):
  """Completion marks after the files they vouch for."""
  name = path.rsplit("/", 1)[-1]
  return (2 if name in _LAST else 1 if name.endswith(".json") else 0, path)


def _listing(url):
  """(filesystem, root, {object path: size}) of the files under `url`."""
  fs, root = storage.filesystem(url)  # (uncached listings: storage.configure)
  return fs, root, {p: info["size"] for p, info in fs.find(root, detail=True).items()}


def pull(url, local, marker=None):
  """Downloads the files under `url` that `local` lacks or holds at another size (with a
  `marker`: only those in directories holding it; a piece's files only with its .json)."""
  fs, root, sizes = _listing(url)

  def wanted(p):
    folder, name = p.rsplit("/", 1)
    piece = _PIECE.match(name)
    return (
      not any(_transient(part) for part in p[len(root) :].split("/"))
      and (marker is None or f"{folder}/{marker}" in sizes)
      and (piece is None or f"{folder}/{piece.group(1)}.json" in sizes)
    )

  for p in sorted(filter(wanted, sizes), key=_order):
    target = os.path.join(local, *p[len(root) :].split("/"))
    if not os.path.isfile(target) or os.path.getsize(target) != sizes[p]:
      _download(fs, p, target)


def _download(fs, path, target):
  os.makedirs(os.path.dirname(target), exist_ok=True)
  tmp = os.path.join(os.path.dirname(target), f".pull-{os.getpid()}-{os.path.basename(target)}")
  try:
    fs.get_file(path, tmp)
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def push_dir(local, url):
  """Uploads the files under `local` that `url` lacks or holds at another size."""
  if not os.path.isdir(local):
    return
  fs, root, sizes = _listing(url)
  files = []
  for folder, subdirs, names in os.walk(local):
    subdirs[:] = [d for d in subdirs if not _transient(d)]
    files += [os.path.join(folder, n) for n in names if not _transient(n)]
  for path in sorted(files, key=_order):
    target = f"{root}/{os.path.relpath(path, local).replace(os.sep, '/')}"
    if sizes.get(target) != os.path.getsize(path):
      fs.put_file(path, target)
