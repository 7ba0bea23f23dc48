"""Retraining ground truth: batched seeds against a loop of skorch fits.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_retrain.py

``retrain_distributions`` for 20 random removal sets (30% of the rows removed)
x 32 seeds on the ensemble benchmark's overhead-bound MLP (64-64-64-10, 4000
samples, 20 epochs, batch 64, SGD with momentum), once with the batched path
and once with a loop of skorch fits (``vectorize=False``), each in a fresh
subprocess so that its peak resident memory is its own. Target: batched at
least 8x faster. Both run the same seeds and the same algorithm; in float32 the
kernels round differently and long training amplifies it, so single members
drift apart as other seeds would: the script prints how far, and how far the
distributions over seeds (what a ground truth is) differ.

``--quick`` shrinks the case for a smoke run; the target refers to the full size.
"""

import argparse
import json
import multiprocessing as mp
import sys
import time

from _memory import peak_rss_mib  # benchmarks/ is the script's folder

CASE = dict(hidden=(64, 64), n_samples=4000, epochs=20, n_seeds=32, n_sets=20,
            keep_fraction=0.7, n_query=100)
N_FEATURES, N_CLASSES, BATCH = 64, 10, 64


def _data(case):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=case["n_samples"] + case["n_query"],
                               n_features=N_FEATURES, n_informative=32, n_classes=N_CLASSES,
                               random_state=0)
    X = X.astype("float32")
    n = case["n_samples"]
    return X[:n], y[:n], X[n:], y[n:]


def _ensemble(case, vectorize):
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import SeedEnsembleClassifier
    from skdtda.nets import MLP

    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=case["hidden"], criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01, batch_size=BATCH,
        max_epochs=case["epochs"], train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=case["n_seeds"], vectorize=vectorize)


def _run(case, vectorize, queue):
    import numpy as np
    import torch

    from skdtda.evaluation import random_subsets, retrain_distributions

    torch.set_num_threads(1)
    X, y, X_q, y_q = _data(case)
    remove = random_subsets(len(X), case["n_sets"], case["keep_fraction"], random_state=0)
    # Warm-up: one-off costs (lazy imports in torch's optimizers and torch.func).
    small = dict(case, epochs=1, n_seeds=2)
    retrain_distributions(_ensemble(small, vectorize), X[:256], y[:256], X_q, y_q,
                          remove=random_subsets(256, 1, 0.5, random_state=0))
    tic = time.perf_counter()
    truth = retrain_distributions(_ensemble(case, vectorize), X, y, X_q, y_q, remove=remove)
    seconds = time.perf_counter() - tic
    queue.put(dict(seconds=seconds, peak_mib=peak_rss_mib(),
                   after=np.asarray(truth.after, dtype=np.float64).tolist()))


def _in_subprocess(case, vectorize):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(case, vectorize, queue))
    proc.start()
    result = queue.get()  # before join: the result is large enough to fill the pipe
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"benchmark subprocess failed with exit code {proc.exitcode}")
    return result


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    case = dict(CASE)
    if args.quick:
        case.update(n_samples=500, n_seeds=8, n_sets=4)
    print(f"retrain_distributions: {case}")
    batched = _in_subprocess(case, True)
    loop = _in_subprocess(case, False)
    a, b = np.array(batched.pop("after")), np.array(loop.pop("after"))  # (sets, seeds, query)
    speedup = loop["seconds"] / batched["seconds"]
    for path, r in (("loop", loop), ("batched", batched)):
        print(f"  {path:8s} {r['seconds']:8.2f} s  peak RSS {r['peak_mib']:7.0f} MiB")
    print(f"  speedup batched/loop: {speedup:.1f}x  (target 8x)")
    # Same seeds, same algorithm, but float32 rounding differs between the kernels,
    # and 1250 SGD steps amplify it: single members drift apart like other seeds
    # would (float64 agrees to 1e-15, tests/test_ensemble.py). What retraining
    # ground truth needs is the distribution over seeds, compared here.
    member_gap = np.abs(a - b)
    seed_spread = a.std(axis=1).mean()
    mean_gap = np.abs(a.mean(axis=1) - b.mean(axis=1))
    stderr = np.sqrt(a.var(axis=1) / a.shape[1] + b.var(axis=1) / b.shape[1])
    corr = np.corrcoef(a.mean(axis=1).ravel(), b.mean(axis=1).ravel())[0, 1]
    gap = dict(member_median=float(np.median(member_gap)), member_max=float(member_gap.max()),
               seed_spread=float(seed_spread), mean_gap_max=float(mean_gap.max()),
               mean_gap_in_stderr=float((mean_gap / stderr).mean()), mean_corr=float(corr))
    print(f"  batched vs loop, float32: per member |difference| median {gap['member_median']:.2e}"
          f", max {gap['member_max']:.2f} (spread over seeds: {seed_spread:.2f}); "
          f"seed means differ by {gap['mean_gap_in_stderr']:.2f} standard errors on average, "
          f"correlation of the seed means over sets and queries {corr:.4f}")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(case=case, loop=loop, batched=batched, speedup=speedup,
                           agreement=gap), f, indent=2)


if __name__ == "__main__":
    main()
