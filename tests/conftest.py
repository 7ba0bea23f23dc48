import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# Two intra-op threads make small torch operations slow and erratic on the
# 2-core CI machines (see README, "Threads"); the library itself leaves the
# setting alone.
torch.set_num_threads(1)
