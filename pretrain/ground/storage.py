"""Run paths that may be local or on object storage (`gs://bucket/run`): one way to test,
read, write and list them.

Files go through etils.epath, as orbax's do; arrays go through TensorStore, which takes
`gs://` as it is. epath is set to reach `gs://` through gcsfs (not TensorFlow's own GCS
client), so that every client honours the same settings: with `STORAGE_EMULATOR_HOST` set (a
local GCS emulator, e.g. for tests) gcsfs, google-cloud-storage and TensorStore all talk to
it, with no credentials. `configure()` runs when this module is imported, before any storage
client reads the environment.

Object storage has no rename, append or locks: a file is written whole (a single object
write is atomic), an appended log is rewritten whole, and <workdir>/.lock is not taken there.
"""

import functools
import importlib.util
import json
import os
import tempfile

from pretrain.ground import errors


def configure():
  """Environment defaults, set before any storage client reads them."""
  os.environ.setdefault("EPATH_USE_TF", "false")  # gs:// through gcsfs: see the module doc
  # No cached listings: files appear while a run goes on (another process's checkpoint, a
  # trial's results), and a stale listing would say they do not exist.
  import fsspec.config

  fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)
  emulator = os.environ.get("STORAGE_EMULATOR_HOST")
  if emulator:
    if "://" not in emulator:
      emulator = "http://" + emulator
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", emulator)
    os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # TensorStore: no auth
    os.environ.setdefault("FSSPEC_GS_TOKEN", "anon")  # gcsfs: no auth
    # gcsfs's bucket-layout lookup is a gRPC call an emulator does not answer.
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def is_remote(path):
  return "://" in str(path)


def absolute(path):
  """A local path made absolute; a URL as it is."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def path(p):
  from etils import epath

  return epath.Path(p)


def exists(p):
  return path(p).exists()


def isdir(p):
  return path(p).is_dir()


def isfile(p):
  return path(p).is_file()


def makedirs(p):
  path(p).mkdir(parents=True, exist_ok=True)


def filesystem(p):
  """(the fsspec filesystem of `p`, `p` as that filesystem names it)."""
  import fsspec

  return fsspec.core.url_to_fs(str(p))


def move_dir(src, dst):
  """Moves a directory (creating dst's parent): a rename on a local disk; on object storage a
  copy of every object, then the deletion of the originals."""
  if not is_remote(src):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    os.rename(src, dst)
    return
  fs, source = filesystem(src)
  fs.mv(source, filesystem(dst)[1], recursive=True)


def size(p):
  """Bytes under `p` (a file, or a directory and everything in it)."""
  fs, where = filesystem(p)
  return fs.du(where)


def read_bytes(p):
  """A file's bytes; a remote one in one request, so that an object replaced meanwhile (a
  results.json another process rewrites) is read whole, old or new, never a mix."""
  if not is_remote(p):
    with open(p, "rb") as f:
      return f.read()
  fs, where = filesystem(p)
  return fs.cat_file(where)


def read_text(p):
  return read_bytes(p).decode("utf-8")


def write_atomic(p, write):
  """Calls `write(local_file)`, then puts the file at `p` whole: a local `p` through a
  temporary file renamed into place, a remote one as one object upload (atomic there)."""
  local_dir = None if is_remote(p) else os.path.dirname(os.path.abspath(p))
  fd, tmp = tempfile.mkstemp(dir=local_dir, prefix=".tmp-", suffix="-" + os.path.basename(p))
  os.close(fd)
  try:
    write(tmp)
    if local_dir is None:
      path(tmp).copy(p, overwrite=True)
    else:
      os.replace(tmp, p)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(p, text):
  def write(tmp):
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)

  write_atomic(p, write)


def write_json(p, obj):
  write_text(p, json.dumps(obj, indent=1, sort_keys=True))


class AppendLog:
  """A file appended to (metrics.jsonl, eval.jsonl, TensorBoard's events; text, or `binary`):
  appended in place on a local disk; on object storage, which cannot append, the object is
  rewritten whole on every flush (such logs hold a record per evaluation or log step:
  kilobytes to a few megabytes)."""

  def __init__(self, p, binary=False):
    self.p, self.remote = str(p), is_remote(p)
    if self.remote:
      self.data = read_bytes(p) if exists(p) else b""
      self.written = len(self.data)
      self.encode = (lambda x: x) if binary else (lambda x: x.encode("utf-8"))
    else:
      self.file = open(p, "ab" if binary else "a", encoding=None if binary else "utf-8")

  def write(self, data):
    if self.remote:
      self.data += self.encode(data)
    else:
      self.file.write(data)

  def flush(self):
    if not self.remote:
      self.file.flush()
    elif len(self.data) != self.written:
      path(self.p).write_bytes(self.data)
      self.written = len(self.data)

  def close(self):
    self.flush()
    if not self.remote:
      os.fsync(self.file.fileno())
      self.file.close()


def bucket(url):
  """'gs://bucket/a/b' -> 'gs://bucket'."""
  scheme, rest = str(url).split("://", 1)
  return f"{scheme}://{rest.split('/', 1)[0]}"


@functools.cache
def check_remote(url, field):
  """One-line errors, before anything expensive, for a URL that cannot be used: an unknown
  scheme, gcsfs missing, no credentials, or a bucket that does not exist."""
  url = str(url)
  scheme = url.split("://", 1)[0]
  if scheme != "gs":
    raise errors.UserError(f"{field}: {url!r}: only local paths and gs:// URLs are supported")
  if importlib.util.find_spec("gcsfs") is None:  # the optional gcs extra
    raise errors.UserError(f"{field}: {url!r} needs gcsfs; pip install -e '.[gcs]'") from None
  if not os.environ.get("STORAGE_EMULATOR_HOST"):
    _check_credentials(url, field)
  try:
    found = exists(bucket(url))
  except PermissionError:  # may use objects without reading the bucket's own metadata
    return
  except Exception as e:
    raise errors.UserError(
      f"{field}: cannot reach {bucket(url)} ({type(e).__name__}: "
      f"{str(e).splitlines()[0] if str(e) else ''}); check the URL and "
      "your access to the bucket"
    ) from None
  if not found:
    raise errors.UserError(
      f"{field}: bucket {bucket(url)} does not exist; create it (gcloud "
      f"storage buckets create {bucket(url)}) or fix the URL"
    )


def _check_credentials(url, field):
  import google.auth
  from google.auth import exceptions

  try:
    google.auth.default()
  except exceptions.DefaultCredentialsError as e:
    first = str(e).splitlines()[0] if str(e) else ""
    raise errors.UserError(
      f"{field}: no Google Cloud credentials to reach {url!r} ({first[:160]}); run `gcloud "
      "auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS to a "
      "service-account key"
    ) from None


def check(p, field):
  """`check_remote` for a URL; nothing for a local path."""
  if p and is_remote(p):
    check_remote(str(p), field)


configure()  # at import: before any storage client reads the environment
