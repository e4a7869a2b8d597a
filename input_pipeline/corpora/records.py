"""Readers of record shards, streamed: JSON lines (plain, gzip or zstd), Parquet by row group,
and the Arrow stream files of a `datasets` folder. Each yields documents' text as bytes and
names the file, and the fix, when it cannot.

pyarrow reads Parquet and Arrow, zstandard the .zst files: both are imported where a file of
theirs is read, so a corpus of text files needs neither (`pip install -e ".[corpora]"`).
"""

import contextlib
import gzip
import importlib

from pretrain.ground import errors, storage


class DataError(errors.UserError):
  """Bad data input (missing, empty or damaged files, unprepared datasets)."""


def _module(name, package):
  try:
    return importlib.import_module(name)
  except ImportError:
    raise DataError(
      f'config.data.files: reading this format needs {package}; pip install -e ".[corpora]"'
    ) from None


@contextlib.contextmanager
def opened(path):
  """A binary file object of a local path or a gs:// URL (streamed through fsspec), a .gz
  file decompressed as it is read."""
  if storage.is_remote(path):
    fs, name = storage.filesystem(path)
    raw = fs.open(name, "rb")
  else:
    raw = open(path, "rb")
  with raw:
    yield gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw


def lines(path):
  """The lines of a JSON-lines file, .gz and .zst decompressed as they stream."""
  if path.endswith(".zst"):
    yield from _zst_lines(path)
    return
  with opened(path) as f:
    yield from f


def _zst_lines(path, chunk=1 << 16):
  """The lines of a zstd file of one or more frames, a chunk of 64 KB of it at a time (text
  grows 3-10x decompressed, so memory stays a few MB); a file cut short (its
  last frame unfinished) is an error naming it."""
  zstd = _module("zstandard", "zstandard")
  frame, started, rest = zstd.ZstdDecompressor().decompressobj(), False, b""
  with opened(path) as f:
    while data := f.read(chunk):
      while data:
        try:
          rest += frame.decompress(data)
        except zstd.ZstdError as e:
          raise DataError(f"config.data.files: {path} is not a zstd file ({e})") from None
        started, data = True, frame.unused_data if frame.eof else b""
        if frame.eof:  # the next frame, if any
          frame, started = zstd.ZstdDecompressor().decompressobj(), False
      *whole, rest = rest.split(b"\n")
      yield from (line + b"\n" for line in whole)
  if started:
    raise DataError(
      f"config.data.files: {path} is not a whole zstd file (cut short); download it again"
    )
  if rest:
    yield rest


def _texts(column):
  for text in column.to_pylist():
    yield text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else b""


def _check_column(names, key, path):
  if key not in names:
    raise DataError(
      f"config.data.jsonl_key: {path} has no column {key!r}; its columns are "
      f"{', '.join(names)}: set the one holding the text"
    )


def parquet_texts(path, key):
  """The `key` column of a Parquet file, one row group at a time."""
  pq = _module("pyarrow.parquet", "pyarrow")
  with opened(path) as f:  # a bucket's shard: its footer and row groups by ranged reads
    try:
      shard = pq.ParquetFile(f)
    except Exception as e:  # pyarrow's ArrowInvalid / OSError for a damaged footer
      raise DataError(f"config.data.files: {path} is not a readable Parquet file ({e})") from None
    _check_column(shard.schema_arrow.names, key, path)
    for group in range(shard.num_row_groups):
      yield from _texts(shard.read_row_group(group, columns=[key]).column(0))


def arrow_texts(path, key):
  """The `key` column of an Arrow stream file (a `datasets` folder's data-*.arrow), batch by
  batch."""
  pa = _module("pyarrow", "pyarrow")
  with opened(path) if storage.is_remote(path) else pa.memory_map(path) as f:
    try:
      reader = pa.ipc.open_stream(f)
    except Exception as e:  # ArrowInvalid: not an Arrow stream
      raise DataError(f"config.data.files: {path} is not a readable Arrow stream ({e})") from None
    _check_column(reader.schema.names, key, path)
    for batch in reader:
      yield from _texts(batch.column(key))
