"""pretrain.train with a host-side sleep before each batch goes to the devices: steps of about
0.4 s, long enough for a test to send signals between them (tests/reliability/test_interrupt.py).

  python -m tests.slowed_train --config=configs/gpt.py:smoke --workdir=DIR ...
"""

import runpy
import sys
import time

from pretrain.training import steps


def main():
  to_global = steps.Steps.to_global
  steps.Steps.to_global = lambda self, batch: (time.sleep(0.4), to_global(self, batch))[1]
  sys.argv[0] = "pretrain.train"
  runpy.run_module("pretrain.train", run_name="__main__")


if __name__ == "__main__":
  main()
