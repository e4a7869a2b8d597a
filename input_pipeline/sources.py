"""Where text comes from: our local-text builder or any tfds text dataset in data_dir."""
import logging
import os

import tensorflow_datasets as tfds

from input_pipeline import local_text

DataError = local_text.DataError


class _QuietTfds(logging.Filter):
  """Drops two tfds warnings that every local_text run would print: its configs are all custom,
  and a dataset not yet prepared has no dataset_info.json."""

  def filter(self, record):
    message = str(record.getMessage())
    return not message.startswith(("Using custom data configuration", "Variant folder"))


logging.getLogger("absl").addFilter(_QuietTfds())


def builder(data):
  """The tfds builder named by config.data (`data`); errors if it is not prepared/preparable."""
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


def prepare(b):
  """Prepares our own builder in its data_dir (a no-op once prepared)."""
  if not b.is_prepared():
    tfds.disable_progress_bar()  # the trainer prints its own progress
    b.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def texts(b, split, text_key, shard=(0, 1)):
  """Yields the text of every example in `split`, restricted to shard (index, count)."""
  if split not in b.info.splits:
    raise DataError(f"config.data: split {split!r} not in {b.name} (has {', '.join(b.info.splits)}); "
                    "set config.data.train_split / eval_split")
  index, count = shard
  sub = tfds.even_splits(split, n=count)[index] if count > 1 else split
  if text_key not in b.info.features:
    raise DataError(f"config.data.text_key: {b.name} has no feature {text_key!r} "
                    f"(has {', '.join(b.info.features)})")
  if b.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    for example in b.as_data_source(split=sub):
      yield _decode(example[text_key])
  else:  # tfrecord-prepared datasets stream through tf.data
    for example in tfds.as_numpy(b.as_dataset(split=sub, shuffle_files=False)):
      yield _decode(example[text_key])


def _decode(value):
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
