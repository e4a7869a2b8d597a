"""Runs entry points as `python -m <module> <args>` would, many times over from one interpreter.

  python -m tests.entry_points   (reads requests on stdin, one JSON object a line)

Each `run` or `start` request forks this process, and the child runs the module as `__main__`
(runpy) with its arguments, in `cwd`, with the request's environment, its output going to
files. `run` waits for it and replies with the exit status and both outputs; `start` replies
with the child's pid at once (its stdout and stderr together in the file `output`), and `wait`
answers with its exit status when it has ended (`block`: wait for that). So a test can signal
a running entry point (kill -9, SIGTERM, Ctrl-C) and watch its output as it comes.

The libraries every entry point imports (jax, flax, orbax, tensorflow-datasets) are imported
once, before any fork, so a request costs what the entry point itself does and not an
interpreter's start-up. The entry points' own modules are not imported here: each child runs
its module's code afresh, flags and all, as a new process would, and no device is set up
before the fork: each child sets up its own (XLA_FLAGS included). Used through
tests/helpers.py (`python_module`, `Running`) and conftest's `entry_point` fixture.
"""

import gc
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


def _child(request, out, err):
  """In the forked child: run the module as __main__, then leave as its process would (exit
  status, atexit handlers, flushed output); never returns to the driver's loop."""
  os.chdir(request["cwd"])
  os.environ.clear()
  os.environ.update(request["env"])
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)  # (not the driver's requests)
  os.dup2(out, 1)
  os.dup2(err, 2)
  module = request["module"]
  sys.argv = [module, *request["args"]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)  # SystemExit, errors: raised
  sys.exit(0)


def _fork(request, out, err):
  pid = os.fork()
  if pid == 0:  # its SystemExit (or error) ends the child, unwinding past the driver's loop
    _child(request, out, err)
  return pid


def run(request):
  """{'returncode', 'stdout', 'stderr'} of the request's module, in a forked child."""
  with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
    pid = _fork(request, out.fileno(), err.fileno())
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    return {
      "returncode": os.waitstatus_to_exitcode(status),
      "stdout": out.read().decode("utf-8", "replace"),
      "stderr": err.read().decode("utf-8", "replace"),
    }


def start(request):
  """{'pid'} of the request's module, started in a forked child writing to `output`."""
  fd = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  pid = _fork(request, fd, fd)
  os.close(fd)
  return {"pid": pid}


def wait(request):
  """{'returncode'} of a started child: None while it runs (unless `block`)."""
  pid, status = os.waitpid(request["pid"], 0 if request["block"] else os.WNOHANG)
  return {"returncode": os.waitstatus_to_exitcode(status) if pid else None}


def main():
  gc.collect()
  gc.freeze()  # the libraries' objects: never scanned again, by the driver or its children
  ops = {"run": run, "start": start, "wait": wait}
  for line in sys.stdin:
    request = json.loads(line)
    print(json.dumps(ops[request["op"]](request)), flush=True)


if __name__ == "__main__":
  main()
