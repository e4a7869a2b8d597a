r"""Lists a run's checkpoints, and verifies them.

  python -m pretrain.checkpoints --workdir=runs/gpt            # step, time, size, model
  python -m pretrain.checkpoints --workdir=runs/gpt --verify   # and is each one usable?

--verify restores every checkpoint on one device (read-only: a running job is not disturbed)
and checks that it is complete, that its arrays match the checksums saved with them, that they
hold no NaN or infinity, and that its meta agrees with the run's config.json and tokenizer.json.
It exits with status 1 if any checkpoint is bad; the trainer would fall back past those.
"""

import datetime
import json
import os

import jax
from absl import app, flags, logging

from input_pipeline import tokenizer
from pretrain.ground import errors, storage
from pretrain.state import checkpointer, checksums, compatibility, run_files

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_VERIFY = flags.DEFINE_bool("verify", False, "Restore and check every checkpoint.")
flags.mark_flags_as_required(["workdir"])


def summary(ckpt, step):
  """'<step>  <time>  <size>  <model>' for one checkpoint."""
  path = os.path.join(ckpt.directory, str(step))
  saved = (ckpt.manager.metadata(step).commit_timestamp_nsecs or 0) / 1e9
  when = datetime.datetime.fromtimestamp(saved).strftime("%Y-%m-%d %H:%M:%S")
  try:
    m = ckpt.meta(step)["model"]
    params = sum(a.size for a in jax.tree.leaves(ckpt.saved_shapes(step)["params"]))
    model = (
      f"{m.get('size', '?')}: {m['num_layers']} layers x {m['d_model']}, vocab "
      f"{m['vocab_size']}, {params / 1e6:.2f}M params"
    )
  except Exception as e:
    model = f"(meta unreadable: {checkpointer._first_line(e)})"
  return f"{step:>8}  {when}  {storage.size(path) / 2**20:9.2f} MiB  {model}"


def problems(ckpt, step, workdir):
  """What makes checkpoint `step` unusable ([] if nothing)."""
  try:
    state = ckpt.verified(step, lambda: ckpt.read_as_saved(step))
  except checkpointer.CorruptCheckpoint as e:
    return [e.reason]
  found = [f"non-finite values in {path}" for path in checksums.non_finite(state)]
  meta = ckpt.meta(step)
  if "checksums" not in meta:
    found.append("no checksums recorded (saved by an older version): integrity unknown")
  saved_model = json.loads(storage.read_text(os.path.join(workdir, "config.json"))).get(
    "resolved_model", {}
  )
  for field in compatibility.SHAPE_FIELDS:
    if (
      field in meta["model"] and field in saved_model and meta["model"][field] != saved_model[field]
    ):
      found.append(
        f"model.{field}={meta['model'][field]!r} but config.json has {saved_model[field]!r}"
      )
  tok = run_files.run_tokenizer(workdir)
  if tok is not None and meta["tokenizer"] != tokenizer.identity(tok):
    found.append("trained with another tokenizer than the run's tokenizer.json")
  return found


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:
    ckpt = run_files.open_run(_WORKDIR.value, "--workdir")
  except errors.UserError as e:
    errors.fail(str(e))
  workdir = run_files.run_dir(ckpt.directory)
  bad = 0
  print(f"{'step':>8}  {'saved':19}  {'size':>13}  model")
  for step in ckpt.all_steps():
    print(summary(ckpt, step), flush=True)
    if _VERIFY.value:
      found = problems(ckpt, step, workdir)
      bad += any(not p.startswith("no checksums") for p in found)
      print(
        f"{'':>8}  "
        + (
          "; ".join(found)
          if found
          else "ok: complete, checksums match, finite, agrees with config.json"
        ),
        flush=True,
      )
  ckpt.close()
  if bad:
    print(
      f"{bad} bad checkpoint(s); training resumes from the newest good one, setting the "
      "bad ones aside",
      flush=True,
    )
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=errors.parse_flags)
