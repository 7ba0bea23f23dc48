"""Seed-ensemble training: the batched path against a loop of skorch fits.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_ensemble.py

Two cases, each timed for both paths in the same run, each path in a fresh
subprocess so that its peak resident memory is its own:

* overhead-bound: MLP 64-64-64-10, 4000 samples, 20 epochs, 32 seeds, batch 64.
  Target: batched at least 8x faster than the loop.
* compute-bound: MLP 64-512-512-10, 8000 samples, 5 epochs, 8 seeds, batch 64.
  Target: batched sustains at least 60% of the FLOP rate of one large float32
  matrix product, measured here in the same run.

``--quick`` shrinks both cases (for a smoke run); the targets refer to the
full sizes.
"""

import argparse
import json
import sys
import time

from _memory import in_subprocess, peak_rss_mib  # benchmarks/ is the script's folder

CASES = {
    "overhead-bound": dict(hidden=(64, 64), n_samples=4000, epochs=20, n_seeds=32),
    "compute-bound": dict(hidden=(512, 512), n_samples=8000, epochs=5, n_seeds=8),
}
N_FEATURES, N_CLASSES, BATCH = 64, 10, 64


def _data(n_samples):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n_samples, n_features=N_FEATURES, n_informative=32,
                               n_classes=N_CLASSES, random_state=0)
    return X.astype("float32"), y


def _ensemble(case, vectorize):
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import SeedEnsembleClassifier
    from skdtda.nets import MLP

    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=case["hidden"], criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01, batch_size=BATCH,
        max_epochs=case["epochs"], train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=case["n_seeds"], vectorize=vectorize,
                                  random_state=0)


def _run(case, vectorize, queue):
    import torch

    torch.set_num_threads(1)
    X, y = _data(case["n_samples"])
    # Warm up first: one-off costs (lazy imports inside torch's optimizers and
    # torch.func) are paid by whichever fit comes first and are not training.
    _ensemble(dict(case, epochs=1, n_seeds=2), vectorize).fit(X[:256], y[:256])
    ens = _ensemble(case, vectorize)
    tic = time.perf_counter()
    ens.fit(X, y)
    seconds = time.perf_counter() - tic
    assert ens.vectorized_ == vectorize
    peak_mib = peak_rss_mib()
    queue.put(dict(seconds=seconds, peak_mib=peak_mib, accuracy=ens.score(X, y)))

def _train_flops(case):
    sizes = [N_FEATURES, *case["hidden"], N_CLASSES]
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    # forward + weight gradients for every layer, input gradients for all but the first
    per_sample = 2 * sum(macs) * 2 + 2 * sum(macs[1:])
    return per_sample * case["n_samples"] * case["epochs"] * case["n_seeds"]


def _matmul_gflops(n=2048, repeats=10):
    import torch

    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    tic = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - tic) / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = {}
    for name, case in CASES.items():
        case = dict(case)
        if args.quick:
            case.update(n_samples=case["n_samples"] // 8, n_seeds=max(2, case["n_seeds"] // 8))
        loop = in_subprocess(_run, case, False)
        batched = in_subprocess(_run, case, True)
        peak = _matmul_gflops()
        gflops = _train_flops(case) / batched["seconds"] / 1e9
        results[name] = dict(case=case, loop=loop, batched=batched,
                             speedup=loop["seconds"] / batched["seconds"],
                             batched_gflops=gflops, matmul_gflops=peak,
                             fraction_of_matmul=gflops / peak)
        print(f"{name}: {case}")
        for path, r in (("loop", loop), ("batched", batched)):
            print(f"  {path:8s} {r['seconds']:8.2f} s  peak RSS {r['peak_mib']:7.0f} MiB  "
                  f"train accuracy {r['accuracy']:.3f}")
        print(f"  speedup batched/loop: {loop['seconds'] / batched['seconds']:.1f}x")
        print(f"  batched rate {gflops:.1f} GFLOP/s = {gflops / peak:.0%} of one large "
              f"float32 matmul ({peak:.1f} GFLOP/s)")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
