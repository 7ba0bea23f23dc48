import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Two intra-op threads make small torch operations slow and erratic on the
# 2-core CI machines (see README, "Threads"); the library itself leaves the
# setting alone.
torch.set_num_threads(1)


@pytest.fixture
def float64():
    """Run a test with torch's default dtype set to float64 (exact comparisons)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
