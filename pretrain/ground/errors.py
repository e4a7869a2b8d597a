"""The one kind of error a user fixes from the command line.

Every check of a config value or an input (data, tokenizer, mesh, checkpoint) raises a
subclass of `UserError` whose message is one line that names the field and the fix. The entry
points (pretrain.train, pretrain.evaluate, pretrain.aot, input_pipeline.prepare) catch
`UserError` the same way: they print `error: <message>` and exit with status 2, before any
expensive work. Anything else is a bug and keeps its traceback.
"""

import os
import re
import sys
import traceback

from absl import flags


class UserError(ValueError):
  """A bad config value or input; the message names the field and the fix."""


def fail(message):
  """Reports a user error as one line and exits with status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def warn(message):
  """A warning for the user, in the style of every other line they read: `warning: <message>`
  on stderr (not absl's log format)."""
  sys.stdout.flush()
  print(f"warning: {message}", file=sys.stderr, flush=True)


def parse_flags(argv, define=None):
  """absl flag parsing, with config-file and override errors reduced to one line. `define`,
  if given, defines more flags first (it may already apply the --config overrides)."""
  try:
    if define is not None:
      define()
    if any(a in ("--help", "-h", "-?", "--helpshort", "--helpfull") for a in argv[1:]):
      _help(argv)
    parsed = flags.FLAGS(argv)
    _load_config_files()
    return parsed
  except (KeyError, AttributeError) as e:  # an override of a field the config does not have
    message = (
      config_file_error(e, argv) if _raised_in_config_file(e, argv) else unknown_field(e, argv)
    )
  except Exception as e:  # each becomes one line, below
    message = config_file_error(e, argv)
  fail(message)


def _help(argv):
  """--help (and the like): absl's usage on stdout, then exit 0, not absl's 1."""
  try:
    flags.FLAGS(argv)
  except SystemExit:
    sys.exit(0)


def _load_config_files():
  """Loads every --config file now: ml_collections defers a missing file's error to the
  config's first use, deep inside the entry point."""
  for name in flags.FLAGS:
    flag = flags.FLAGS[name]
    if flag.flag_type() == "config object" and flag.present:
      flag.value.keys()  # a config that failed to load raises its error here


def _user_error(error):
  """The innermost UserError among `error` and what caused it, if any."""
  found = None
  while error is not None:
    if isinstance(error, UserError) and not str(error).startswith("Error whilst parsing"):
      found = error
    error = error.__cause__ or error.__context__
  return found


def _raised_in_config_file(error, argv):
  path = _config_arg(argv).split(":", 1)[0]
  return bool(path) and any(
    os.path.abspath(frame.filename) == os.path.abspath(path)
    for frame in traceback.extract_tb(error.__traceback__)
  )


def _config_arg(argv):
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")


def config_file_error(error, argv):
  """One line for a config file that does not load: missing, not Python, or its get_config
  raising (a UserError keeps its own message)."""
  inner = _user_error(error)
  if inner is not None:
    return str(inner)
  arg = _config_arg(argv)
  path = arg.split(":", 1)[0]
  fix = "give --config=configs/<file>.py:<arg>, e.g. --config=configs/gpt.py:smoke"
  if isinstance(error, OSError) or (path and not os.path.isfile(path)):
    return f"--config={arg}: no config file {path!r}; {fix}"
  if isinstance(error, SyntaxError):
    return (
      f"--config={arg}: {path} is not a Python config file ({error.msg}, line "
      f"{error.lineno}); {fix}"
    )
  if isinstance(error, flags.Error):
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    found = [l.split(": ", 1)[1] for l in lines if l.startswith(("ValueError:", "KeyError:"))]
    return found[-1] if found else lines[0] if lines else str(error)
  cause = error.__context__ or error
  return (
    f"--config={arg}: {path}'s get_config raised {type(cause).__name__}: "
    f"{str(cause).splitlines()[-1] if str(cause) else ''}; fix the file or its argument"
  )


def unknown_field(error, argv):
  r"""'unknown config field optimizer.lrr; did you mean optimizer.lr?' from ml_collections'
  KeyError/AttributeError ("'lrr'\nDid you mean \"lr\" instead of \"lrr\"?")."""
  text = error.args[0] if error.args else str(error)
  text = text.args[0] if isinstance(text, BaseException) and text.args else str(text)
  key = re.match(r"""\W*([^'"\s]+)""", text)
  key = key.group(1) if key else text
  paths = [a.split("=", 1)[0][len("--config.") :] for a in argv if a.startswith("--config.")]
  path = next((p for p in paths if key in p.split(".")), key)
  message = f"unknown config field {path}"
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  if suggestion:
    fixed = ".".join(suggestion.group(1) if part == key else part for part in path.split("."))
    return f"{message}; did you mean {fixed}?"
  return f"{message}; check the --config.<path> spelling"
