r"""Tokenizes a config's datasets once, ahead of training (input_pipeline/corpora/tokenized.py).

  python -m input_pipeline.prepare --config=configs/gpt.py:small --config.data.dataset=lm1b

prepares the source dataset (our local-text builder; other tfds datasets must already be
prepared in data_dir), gets the tokenizer (trained and cached, or loaded), and tokenizes the
train and eval splits of every dataset of the mixture. Rerunning it is a no-op; an interrupted
run picks up at the first unfinished piece. Training runs the same step on start-up, so this
command is only needed to do the work ahead of time, or on other machines:

  # on each of N machines (or as a SLURM array), sharing data_dir:
  python -m input_pipeline.prepare --config=... --process_count=N --process_index=$i

Worker i tokenizes pieces i, i + N, ...; whichever worker finds every piece done writes the
manifest, and only then can training read the split. A gs:// data_dir is shared through local
mirrors (input_pipeline/corpora/mirror.py): each worker uploads its pieces, then downloads the others'
and writes the manifest if it finds them all (if workers finish together and none does,
training's first run writes it).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from input_pipeline.corpora import mirror, sources, tokenized
from pretrain.ground import errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_PROCESS_INDEX = flags.DEFINE_integer("process_index", 0, "This worker's index.")
_PROCESS_COUNT = flags.DEFINE_integer("process_count", 1, "Number of workers.")


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/gpt.py:small")
  if not 0 <= _PROCESS_INDEX.value < _PROCESS_COUNT.value:
    raise app.UsageError("--process_index must be in [0, --process_count)")
  try:
    remote = mirror.Mirror(config.data)  # unusable URLs fail here, before any work
    data, mode = remote.data, tokenized.mode_for(config.data)
    built = remote.synced(remote.source_dirs(), lambda: sources.builders(data))
    tok = remote.synced(remote.tokenizer_dirs(), lambda: tokenized.tokenizer_for(data, built))
    worker = dict(process_index=_PROCESS_INDEX.value, process_count=_PROCESS_COUNT.value)
    prepare = lambda: tokenized.prepare_all(data, mode, tok, built, **worker)
    split_dirs = remote.tokenized_dirs(built, tok, mode)
    dirs = remote.synced(split_dirs, prepare)
    if remote.roots and _PROCESS_COUNT.value > 1:  # the others' pieces, uploaded meanwhile
      dirs = remote.synced(split_dirs, prepare)
  except errors.UserError as e:
    errors.fail(str(e))
  srcs = {name: src for name, src, _ in sources.named(data)}
  for (name, split), path in dirs.items():
    try:
      opened = tokenized.open_split(srcs[name], built[name], split, tok, mode)
      print(f"{name or 'data'} {split}: {opened.summary()} -> {remote.url(path)}")
    except sources.DataError:
      print(
        f"{name or 'data'} {split}: this worker's pieces are done; the manifest waits for the "
        f"other workers -> {remote.url(path)}"
      )
  logging.flush()


if __name__ == "__main__":
  app.run(main, flags_parser=errors.parse_flags)
