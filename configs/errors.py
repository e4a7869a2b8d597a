"""The one kind of error a user fixes from the command line.

Every check of a config value or an input (data, tokenizer, mesh, checkpoint) raises a
subclass of `UserError` whose message is one line that names the field and the fix. The entry
points (pretrain.train, pretrain.evaluate, pretrain.aot, input_pipeline.prepare) catch
`UserError` the same way: they print `error: <message>` and exit with status 2, before any
expensive work. Anything else is a bug and keeps its traceback.
"""
import re
import sys

from absl import flags


class UserError(ValueError):
  """A bad config value or input; the message names the field and the fix."""


def fail(message):
  """Reports a user error as one line and exits with status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def parse_flags(argv, define=None):
  """absl flag parsing, with config-file and override errors reduced to one line. `define`,
  if given, defines more flags first (it may already apply the --config overrides)."""
  try:
    if define is not None:
      define()
    return flags.FLAGS(argv)
  except flags.Error as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    found = [l.split(": ", 1)[1] for l in lines if l.startswith(("ValueError:", "KeyError:"))]
    message = found[-1] if found else lines[0] if lines else str(e)
  except (KeyError, AttributeError) as e:  # an override of a field the config does not have
    message = unknown_field(e, argv)
  fail(message)


def unknown_field(error, argv):
  r"""'unknown config field optimizer.lrr; did you mean optimizer.lr?' from ml_collections'
  KeyError/AttributeError ("'lrr'\nDid you mean \"lr\" instead of \"lrr\"?")."""
  text = error.args[0] if error.args else str(error)
  text = text.args[0] if isinstance(text, BaseException) and text.args else str(text)
  key = re.match(r"""\W*([^'"\s]+)""", text)
  key = key.group(1) if key else text
  paths = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
  path = next((p for p in paths if key in p.split(".")), key)
  message = f"unknown config field {path}"
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  if suggestion:
    fixed = ".".join(suggestion.group(1) if part == key else part for part in path.split("."))
    return f"{message}; did you mean {fixed}?"
  return f"{message}; check the --config.<path> spelling"
