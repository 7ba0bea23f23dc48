"""Cost of UnrolledInfluence relative to one training run.

Run with one intra-op thread, as all figures in docs/unrolled.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_unrolled.py

The net is the ensemble benchmark's overhead-bound MLP (64-64-64-10, float32,
SGD with momentum, batch 64, 4000 samples, 20 epochs = 1260 steps). Each
measurement runs in a fresh subprocess so that its peak resident memory is its
own:

* ``skorch fit``: one member trained by ``net.fit`` (the ensemble's loop path).
* ``torch loop``: the same steps as a bare torch loop (no skorch), the cheapest
  training run this arithmetic can have on one CPU thread.
* ``replay K``: one forward-mode replay of the member's training carrying K
  removal tangents (forward mode runs ``ceil((N + 1) / n_tangents)`` of them
  per member to cover every training row).
* ``reverse 64``: one reverse-mode sweep with the measurement gradients of 64
  query rows, which covers all N training rows for those queries (what
  ``UnrolledInfluence(mode="reverse")`` runs per member and 64 queries).
* ``gemm``: the rate of one of the tangent matrix products alone, (4096 x 64)
  @ (64 x 64) in float32: the floor the replay's arithmetic cannot beat here.

Target (issue #6): under 3x a training run per batch of 64 tangents. The
replay at a quarter of the epochs shows that memory does not grow with the
number of steps. Each figure is the best of two fresh processes. ``--quick``
runs 2 epochs (a smoke run; the figures refer to the full size).
"""

import argparse
import json
import multiprocessing as mp
import sys
import time

from _memory import peak_rss_mib  # benchmarks/ is the script's folder

N_SAMPLES, N_FEATURES, N_CLASSES, HIDDEN, BATCH = 4000, 64, 10, (64, 64), 64


def _data():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=N_SAMPLES, n_features=N_FEATURES, n_informative=32,
                               n_classes=N_CLASSES, random_state=0)
    return X.astype("float32"), y


def _ensemble(epochs):
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import SeedEnsembleClassifier
    from skdtda.nets import MLP

    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=HIDDEN, criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01, batch_size=BATCH,
        max_epochs=epochs, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=1, vectorize=False, random_state=0)


def _run(what, epochs, n_tangents, queue):
    import numpy as np
    import torch

    torch.set_num_threads(1)
    X, y = _data()
    if what == "skorch fit":
        _ensemble(1).fit(X[:256], y[:256])  # warm-up: first-call costs are not training
        tic = time.perf_counter()
        _ensemble(epochs).fit(X, y)
        seconds = time.perf_counter() - tic
    elif what == "torch loop":
        from skdtda.nets import MLP

        torch.manual_seed(0)
        module = MLP(N_FEATURES, N_CLASSES, HIDDEN)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
        X_t, y_t = torch.as_tensor(X), torch.as_tensor(y)
        generator = torch.Generator().manual_seed(0)
        tic = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(X), generator=generator)
            for start in range(0, len(X), BATCH):
                idx = order[start:start + BATCH]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(module(X_t[idx]), y_t[idx]).backward()
                optimizer.step()
        seconds = time.perf_counter() - tic
    elif what == "gemm":
        a, b = torch.randn(4096, 64), torch.randn(64, 64)
        for _ in range(20):
            a @ b
        tic = time.perf_counter()
        for _ in range(500):
            a @ b
        seconds = time.perf_counter() - tic
        queue.put({"gflops": 2 * 4096 * 64 * 64 * 500 / seconds / 1e9})
    else:
        from skdtda.ensemble import net_targets
        from skdtda.influence.unrolled._replay import _Replay, _removal_directions

        ens = _ensemble(epochs).fit(X, y)
        replay = _Replay(ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0], X,
                         net_targets(ens, y), "classifier")
        directions = _removal_directions(np.arange(n_tangents), len(X), torch.float32)
        replay.run(directions[:1])  # warm-up
        if what == "reverse":
            from skdtda.model import FlatMember

            member = FlatMember(ens.estimators_[0], "loss", "classifier")
            queries = np.arange(len(X) - n_tangents, len(X))
            cotangents = member.per_sample_grads("measurement", X[queries],
                                                 net_targets(ens, y[queries]))
            tic = time.perf_counter()
            theta, _ = replay.adjoint(cotangents)
        else:
            tic = time.perf_counter()
            theta, _ = replay.run(directions)
        seconds = time.perf_counter() - tic
        error = float((theta - replay.member.theta).abs().max())
        queue.put({"replay_max_abs_error": error})
    queue.put({"what": what, "epochs": epochs, "n_tangents": n_tangents, "seconds": seconds,
               "peak_rss_mib": peak_rss_mib()})


def _measure(what, epochs, n_tangents=0, repeat=2):
    """Best of ``repeat`` fresh processes: the machine is shared, the minimum is the cost."""
    runs = [_measure_once(what, epochs, n_tangents) for _ in range(repeat)]
    return min(runs, key=lambda r: r["seconds"])


def _measure_once(what, epochs, n_tangents):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_run, args=(what, epochs, n_tangents, queue))
    proc.start()
    result = {}
    while True:
        item = queue.get()
        result.update(item)
        if "seconds" in item:
            break
    proc.join()
    print(json.dumps(result), flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    epochs = 2 if args.quick else 20
    steps = epochs * -(-N_SAMPLES // BATCH)
    print(f"MLP {N_FEATURES}-{'-'.join(map(str, HIDDEN))}-{N_CLASSES}, float32, {N_SAMPLES} rows, "
          f"batch {BATCH}, {epochs} epochs = {steps} steps", flush=True)
    fit = _measure("skorch fit", epochs)
    loop = _measure("torch loop", epochs)
    one = _measure("replay", epochs, 1)
    many = _measure("replay", epochs, 64)
    short = _measure("replay", max(1, epochs // 4), 64)
    reverse = _measure("reverse", epochs, 64)
    gemm = _measure("gemm", 0)
    print()
    print(f"{'run':<28}{'seconds':>9}{'ms/step':>9}{'x skorch fit':>14}{'x torch loop':>14}"
          f"{'peak MiB':>10}")
    for label, r in (("skorch fit (1 member)", fit), ("torch loop (1 member)", loop),
                     ("replay, 1 tangent", one), ("replay, 64 tangents", many),
                     (f"replay, 64 tangents, {short['epochs']} ep", short),
                     (f"reverse, 64 queries x {N_SAMPLES}", reverse)):
        n_steps = r["epochs"] * -(-N_SAMPLES // BATCH)
        # ratios to the training run of the same number of epochs
        same = r["epochs"] / epochs
        print(f"{label:<28}{r['seconds']:>9.2f}{1e3 * r['seconds'] / n_steps:>9.2f}"
              f"{r['seconds'] / (fit['seconds'] * same):>14.2f}"
              f"{r['seconds'] / (loop['seconds'] * same):>14.2f}"
              f"{r['peak_rss_mib']:>10.0f}")
    ratio = many["seconds"] / fit["seconds"]
    print(f"\nforward mode: 64 tangents cost {ratio:.2f}x one skorch training run "
          f"(target < 3x: {'met' if ratio < 3 else 'NOT met'}); "
          f"{many['seconds'] / loop['seconds']:.1f}x a bare torch loop")
    print(f"replay max |theta - member theta| = {many['replay_max_abs_error']:.2g} (float32)")
    print(f"peak memory {short['peak_rss_mib']:.0f} MiB at {short['epochs']} epochs, "
          f"{many['peak_rss_mib']:.0f} MiB at {epochs} epochs")
    # The floor: 64 Hessian-vector products per step are ~86x the FLOPs of one
    # gradient step on this net; report the rate the replay sustains.
    sizes = [N_FEATURES, *HIDDEN, N_CLASSES]
    pairs = list(zip(sizes[:-1], sizes[1:]))
    # per tangent and row: 2 products in the first layer (no input tangent, no
    # input gradient), 6 in every other one
    flops = 2 * 64 * BATCH * (sum(a * b for a, b in pairs[:1]) * 2
                              + sum(a * b * 6 for a, b in pairs[1:])) / 1e9
    print(f"tangent matrix products: {flops:.2f} GFLOP per step; the "
          f"replay sustains {flops * steps / many['seconds']:.1f} GFLOP/s")
    floor = flops * steps / gemm["gflops"]
    print(f"floor: those products alone at this machine's rate for one of them "
          f"({gemm['gflops']:.0f} GFLOP/s) take {floor:.2f} s = {floor / fit['seconds']:.2f}x "
          f"the training run")
    replays = -(-(N_SAMPLES + 1) // 64)
    print(f"reverse mode: 64 queries x all {N_SAMPLES} rows cost "
          f"{reverse['seconds'] / fit['seconds']:.2f}x one skorch training run "
          f"({reverse['seconds'] / many['seconds']:.2f}x a forward replay of 64 tangents); "
          f"forward mode needs {replays} replays for the same rows "
          f"(~{replays * ratio:.0f}x); per 64 training rows covered, the sweep costs "
          f"{reverse['seconds'] / fit['seconds'] * 64 / N_SAMPLES:.3f}x a training run")
    print(f"reverse max |theta - member theta| = {reverse['replay_max_abs_error']:.2g}; "
          f"peak memory {reverse['peak_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
