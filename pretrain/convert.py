r"""Hugging Face GPT-2 / Llama decoders and BERT / RoBERTa / ModernBERT encoders <-> our runs.

  python -m pretrain.convert from_hf --hf_dir=gpt2-local --workdir=runs/gpt2 [--overwrite]
  python -m pretrain.convert to_hf --workdir=runs/gpt2 --hf_dir=runs/export/gpt2 [--step=N]

The conversion itself is pretrain/state/hf_conversion.py; an imported run's config starts
from configs/gpt.py (smoke) for a decoder, configs/bert.py (smoke, recipe bert, roberta or
modern) for an encoder, and configs/finetune/glue.py for a sequence classifier.
"""

from absl import app, flags, logging

from configs import bert, gpt
from configs.finetune import glue
from pretrain.ground import errors
from pretrain.state import hf_conversion

COMMANDS = ("from_hf", "to_hf")


def base_config(kind):
  """The config an imported run goes into (hf_conversion.import_hf's `base_config`)."""
  if kind == "gpt":
    return gpt.get_config("smoke")
  if kind in ("bert", "roberta"):
    return bert.get_config(f"smoke,recipe={kind}")
  if kind == "modernbert":
    return bert.get_config("smoke,recipe=modern")
  return glue.get_config(kind)  # a GLUE task: sst2, mnli or stsb


def from_hf(hf_dir, workdir, overwrite=False, scan_layers=True):
  """A local HF directory -> a workdir with config.json, tokenizer.json and a step-0
  checkpoint; returns the resolved model."""
  imported = hf_conversion.import_hf(hf_dir, base_config, scan_layers=scan_layers)
  hf_conversion.write_run(imported, workdir, overwrite=overwrite)
  return imported.model


def run(command, hf_dir, workdir, step=None, overwrite=False, scan_layers=True):
  """One subcommand; a line on stdout saying what was written."""
  if command not in COMMANDS:
    raise hf_conversion.ConvertError(f"command: {command!r}; use one of {', '.join(COMMANDS)}")
  for flag, value in (("--hf_dir", hf_dir), ("--workdir", workdir)):
    if not value:
      raise hf_conversion.ConvertError(f"{flag}: required")
  if command == "from_hf":
    m = from_hf(hf_dir, workdir, overwrite=overwrite, scan_layers=scan_layers)
    print(
      f"wrote {workdir}: {m.size} model, {m.num_layers} layers, d_model {m.d_model}, "
      f"vocab {m.vocab_size}; checkpoint at step 0",
      flush=True,
    )
  else:
    step, with_tok = hf_conversion.export_hf(workdir, hf_dir, step=step, overwrite=overwrite)
    print(
      f"wrote {hf_dir} from step {step} of {workdir}"
      + ("" if with_tok else " (the run has no tokenizer.json: weights and config only)"),
      flush=True,
    )


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory.")
  flags.DEFINE_string("workdir", None, "The run's directory.")
  flags.DEFINE_integer("step", None, "to_hf: the checkpoint's step (default: the latest).")
  flags.DEFINE_bool("overwrite", False, "Replace a non-empty output directory.")
  flags.DEFINE_bool("scan_layers", True, "from_hf: save the layers stacked (scanned).")


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(f"give one command: {' | '.join(COMMANDS)}")
  f = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  try:
    run(argv[1], f.hf_dir, f.workdir, step=f.step, overwrite=f.overwrite, scan_layers=f.scan_layers)
  except errors.UserError as e:
    errors.fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=lambda argv: errors.parse_flags(argv, define_flags))
