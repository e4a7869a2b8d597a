"""Helpers the tests share, imported by name (`from tests import helpers`)."""

import subprocess
import threading
import time

from tests.conftest import REPO


class Running:
  """A subprocess (in the checkout) whose output, stdout and stderr together, is collected
  line by line as it comes, so that a test can act at a moment of its run."""

  def __init__(self, cmd, env):
    self.proc = subprocess.Popen(
      cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    self.lines = []
    self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
    self.reader.start()

  def caught(self, predicate, timeout=180):
    """Waits until `predicate()` holds while the process runs; False if it ended first."""
    deadline = time.time() + timeout
    while self.proc.poll() is None:
      if predicate():
        return True
      assert time.time() < deadline, "".join(self.lines)
      time.sleep(0.003)
    return False

  def wait_for(self, prefix, timeout=180):
    """Waits for a line that starts with `prefix`; fails if the process ends first."""
    seen = lambda: any(line.startswith(prefix) for line in self.lines)
    assert self.caught(seen, timeout) or seen(), "".join(self.lines)

  def signal(self, sig):
    self.proc.send_signal(sig)

  def finish(self):
    self.proc.wait(timeout=300)
    self.reader.join()
    return "".join(self.lines)
