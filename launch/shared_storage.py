"""The launchers' check that a run on cloud machines writes where it outlives them: a TPU
slice's workers and a GKE job's pods each have their own disk, gone with the machine, so the
workdir (checkpoints, metrics) must be a bucket every worker can write (pretrain/ground/storage.py)."""

from absl import app

from pretrain.ground import storage


def workdir_of(train_args):
  """The --workdir among pretrain.train's arguments (the last one given), or None."""
  found = None
  for i, arg in enumerate(train_args):
    if arg.startswith("--workdir="):
      found = arg.split("=", 1)[1]
    elif arg == "--workdir" and i + 1 < len(train_args):
      found = train_args[i + 1]
  return found


def require_bucket(train_args, where):
  """A usage error (before any machine is created) if --workdir is a local path."""
  workdir = workdir_of(train_args)
  if workdir is not None and not storage.is_remote(workdir):
    raise app.UsageError(
      f"--workdir: {workdir!r} is a local path, but {where} each have their own disk, lost "
      "with the machine; give a bucket every worker can write, e.g. --workdir=gs://BUCKET/run"
    )
