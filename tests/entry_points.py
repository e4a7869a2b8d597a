"""Runs entry points as `python -m <module> <args>` would, many times over from one interpreter.

  python -m tests.entry_points   (reads requests on stdin: one JSON [module, args, cwd] a line)

Each request forks this process, and the child runs the module as `__main__` (runpy) with its
arguments in `cwd`, its stdout and stderr going to files; the reply (one JSON line on stdout) is the
exit status and both outputs. The libraries every entry point imports (jax, flax, orbax,
tensorflow-datasets) are imported once, before any fork, so a request costs what the entry
point itself does and not an interpreter's start-up. The entry points' own modules are not
imported here: each child runs its module's code afresh, flags and all, as a new process would,
and no device is set up before the fork: each child sets up its own (XLA_FLAGS included).
Used through conftest's `entry_point` fixture: the docs' commands, every entry point's edge
behaviour (--help, a bad flag, a missing workdir) and the command-line tests that read a
command's output and exit status.
"""

import json
import os
import runpy
import sys
import tempfile

import absl.app  # noqa: F401  (imported once for every child)
import flax.nnx  # noqa: F401
import jax  # noqa: F401
import orbax.checkpoint  # noqa: F401
import tensorflow_datasets  # noqa: F401


def _child(module, args, cwd, out, err):
  """In the forked child: run the module as __main__, then leave as its process would (exit
  status, atexit handlers, flushed output); never returns to the driver's loop."""
  os.chdir(cwd)
  os.dup2(out.fileno(), 1)
  os.dup2(err.fileno(), 2)
  sys.argv = [module, *args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)  # SystemExit, errors: raised
  sys.exit(0)


def run(module, args, cwd):
  """{'returncode', 'stdout', 'stderr'} of `python -m module args` in `cwd`, in a forked
  child."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    pid = os.fork()
    if pid == 0:
      _child(module, args, cwd, out, err)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return {
      "returncode": os.waitstatus_to_exitcode(status),
      "stdout": out.read().decode("utf-8", "replace"),
      "stderr": err.read().decode("utf-8", "replace"),
    }


def main():
  for line in sys.stdin:
    module, args, cwd = json.loads(line)
    print(json.dumps(run(module, args, cwd)), flush=True)


if __name__ == "__main__":
  main()
