import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # test helpers such as linear_gaussian.py

# Under pytest-xdist each worker gets its share of the cores, for torch in the worker and for
# the processes the tests start (CLI runs, torchrun workers, tutorials): workers x threads
# above the core count slows every test several-fold.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    os.environ["MKL_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)

# the shared data sets beside the checkout (../shared/data), or where VAEKIT_SHARED_DATA says
SHARED_DATA = Path(os.environ.get("VAEKIT_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA
