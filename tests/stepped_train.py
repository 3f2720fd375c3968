"""``vaekit train`` that announces every optimizer step on stdout ("step N") and pauses 2 ms
after it, so a test can signal the process at a chosen step whatever the machine's speed
(a wall-clock delay lands after the end of the run on a fast machine).

    python tests/stepped_train.py train --out RUN ...   (the arguments of ``vaekit``)"""

import sys
import time

from vaekit.training import loop
from vaekit.cli import main

_train_step = loop.Trainer.train_step


def announced_step(self, x, y=None):
    result = _train_step(self, x, y)
    print(f"step {self.step + (result is not None)}", flush=True)
    time.sleep(0.002)
    return result


loop.Trainer.train_step = announced_step

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
