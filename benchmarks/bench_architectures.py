"""Attribution of CNNs and a transformer: skdtda's EK-FAC against kronfluence's, looped over seeds.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_architectures.py [--cases a c]
        [--size full|small] [--kronfluence-python /tmp/kf-venv/bin/python] [--json out.json]

kronfluence lives in its own venv (see ``bench_influence.py``'s docstring); it
rebuilds every seed's module from ``benchmarks/_architectures.py`` and its saved
weights. Cases (``--size full``, as the architectures issue specifies):

* ``a``: ``DigitsCNN`` (Conv2d-ReLU-MaxPool x2, Linear x2; 6,058 parameters) on
  scikit-learn's digits, 16 seeds, 1000 training rows x 100 queries;
* ``b``: ``ResNetCNN`` (basic residual blocks with BatchNorm2d, ~0.6M
  parameters) on synthetic 3x32x32 images, 8 seeds, 5000 rows x 500 queries;
* ``c``: ``DigitsTransformer`` (patch embedding, attention from ``nn.Linear``
  projections, LayerNorm, MLP block; 9,610 parameters) on digits, 16 seeds,
  1000 rows x 100 queries.

``--size small`` shrinks case b to 16x16 images, 1000 rows x 100 queries and 2
seeds (a CPU-sized run; the full case is meant for a GPU machine or a long run).

Measured, each side in a fresh process after a warm-up: the time from the fitted
ensemble to the seed-averaged (n_query, n_train) matrix of the queries' loss
(skdtda: ``InfluenceTransformer(ens, curvature="ekfac", damping=D)`` ``fit`` +
``influence_samples(X_q, y_q)``; kronfluence: EK-FAC factors + pairwise scores per
seed), the peak resident set of each process (VmHWM), and their rank agreement
(Spearman over training rows, averaged over queries) per seed and on the
seed-averaged matrix. kronfluence's Fisher samples labels from the model, so it is rerun
with other labels on ``--ceiling-seeds`` members: its agreement with its first run
is the ceiling of any agreement with one kronfluence run. Both hold the same
parameters fixed (BatchNorm and LayerNorm affine parameters, the transformer's
positional embedding): kronfluence tracks Linear and Conv2d modules only, skdtda's
attributed set is printed.

Each case also prints the arithmetic floor of EK-FAC attribution
(``benchmarks/_ekfac_floor.py``): its matrix products counted from the model's
layer shapes, at the rate of one large float32 product measured at the start; a
lower bound for any implementation of the same computation, so both libraries'
times read as multiples of it.
"""

import argparse
import json
import os
import pickle
import sys
import tempfile
import time

import numpy as np

from _ekfac_floor import ekfac_macs, floor_seconds, gemm_gflops, layer_shapes
from _memory import in_subprocess, peak_rss_mib  # benchmarks/ is the script's folder
from bench_influence import DEFAULT_KF_PYTHON, _agreement, _kronfluence

DAMPING = 1e-3
CASES = {
    "a": dict(model="DigitsCNN", kwargs={}, data="digits", n_train=1000, n_query=100,
              n_seeds=16, epochs=20, lr=0.05, batch=64),
    "b": dict(model="ResNetCNN", kwargs={"blocks": [1, 1, 2]}, data="images", side=32,
              n_train=5000, n_query=500, n_seeds=8, epochs=2, lr=0.05, batch=128),
    "c": dict(model="DigitsTransformer", kwargs={}, data="digits", n_train=1000,
              n_query=100, n_seeds=16, epochs=20, lr=0.003, batch=64, optimizer="adam"),
}
SMALL_B = dict(side=16, n_train=1000, n_query=100, n_seeds=2, kwargs={"blocks": [1, 1, 2],
                                                                     "side": 16})


def _data(case):
    if case["data"] == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = (X / 16).astype(np.float32)
    else:
        # class-dependent colour blobs in noise: learnable in an epoch or two
        rng = np.random.default_rng(0)
        n, side = case["n_train"] + case["n_query"], case["side"]
        y = rng.integers(0, 10, n)
        centres = rng.normal(size=(10, 3, 1, 1)).astype(np.float32)
        grid = np.linspace(-1, 1, side, dtype=np.float32)
        bump = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) * 3)
        X = (centres[y] * bump + rng.normal(size=(n, 3, side, side)).astype(np.float32))
        X = X.reshape(n, -1).astype(np.float32)
    n_train, n_query = case["n_train"], case["n_query"]
    return X[:n_train], y[:n_train], X[n_train:n_train + n_query], y[n_train:n_train + n_query]


def _prepare(folder, case):
    import torch
    from skorch import NeuralNetClassifier

    from _architectures import MODELS
    from skdtda import SeedEnsembleClassifier

    torch.set_num_threads(1)
    X, y, X_q, y_q = _data(case)
    optimizer = torch.optim.Adam if case.get("optimizer") == "adam" else torch.optim.SGD
    extra = {} if optimizer is torch.optim.Adam else {"optimizer__momentum": 0.9}
    net = NeuralNetClassifier(
        MODELS[case["model"]], criterion=torch.nn.CrossEntropyLoss, optimizer=optimizer,
        lr=case["lr"], batch_size=case["batch"], max_epochs=case["epochs"], train_split=None,
        verbose=0, **{f"module__{k}": v for k, v in case["kwargs"].items()}, **extra)
    tic = time.perf_counter()
    ens = SeedEnsembleClassifier(net, n_seeds=case["n_seeds"], random_state=0).fit(X, y)
    seconds = time.perf_counter() - tic
    with open(os.path.join(folder, "ensemble.pkl"), "wb") as f:
        pickle.dump(ens, f)
    np.savez(os.path.join(folder, "data.npz"), X_train=X, y_train=np.searchsorted(ens.classes_, y),
             X_query=X_q, y_query=np.searchsorted(ens.classes_, y_q), labels_train=y,
             labels_query=y_q)
    members = [{k: v.detach().clone() for k, v in est.module_.state_dict().items()}
               for est in ens.estimators_]
    torch.save(members, os.path.join(folder, "members.pt"))
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(dict(model=case["model"], kwargs=case["kwargs"]), f)
    module = ens.estimators_[0].module_
    n_params = sum(p.numel() for p in module.parameters())
    return dict(train_seconds=seconds, vectorized=bool(ens.vectorized_), n_params=n_params,
                query_accuracy=float(ens.score(X_q, y_q)),
                layer_shapes=layer_shapes(module, torch.as_tensor(X[:4])))


def _skdtda_run(folder, damping, subspace, queue):
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from skdtda import InfluenceTransformer

    torch.set_num_threads(1)
    with open(os.path.join(folder, "ensemble.pkl"), "rb") as f:
        ens = pickle.load(f)
    data = np.load(os.path.join(folder, "data.npz"))
    X, y, X_q, y_q = (data[k] for k in ("X_train", "labels_train", "X_query", "labels_query"))
    # warm-up: one-off costs (lazy imports, first calls) are not attribution; a
    # fitted ensemble attributes only its own rows, so a one-member one-epoch clone
    # is fitted on the warm-up rows
    from sklearn.base import clone

    small = clone(ens).set_params(n_seeds=1, net__max_epochs=1).fit(X[:256], y[:256])
    InfluenceTransformer(small, curvature="ekfac", damping=damping).fit(
        X[:256], y[:256]).influence_samples(X_q[:8], y_q[:8])
    base = peak_rss_mib()
    tic = time.perf_counter()
    options = None if subspace is None else {"subspace": subspace}
    influence = InfluenceTransformer(ens, curvature="ekfac", damping=damping,
                                     curvature_options=options).fit(X, y)
    fit_seconds = time.perf_counter() - tic
    delta = influence.influence_samples(X_q, y_q)
    seconds = time.perf_counter() - tic
    tag = "" if subspace is None else f"_subspace{subspace}"
    np.save(os.path.join(folder, f"skdtda{tag}_scores.npy"), delta.astype(np.float32))
    queue.put(dict(seconds=seconds, fit_seconds=fit_seconds, peak_mib=peak_rss_mib(),
                   base_mib=base, n_params_attributed=influence.n_params_attributed_,
                   fixed=sorted(influence.fixed_parameters_),
                   store_mib=influence.store_nbytes_ / 2**20))


def run_case(name, case, kf_python, ceiling_seeds=4, gflops=None, subspaces=()):
    with tempfile.TemporaryDirectory(prefix=f"bench_arch_{name}_") as folder:
        prep = in_subprocess(_prepare_task, folder, case)
        sk = in_subprocess(_skdtda_run, folder, DAMPING, None)
        sk_scores = np.load(os.path.join(folder, "skdtda_scores.npy"))
        compressed = []
        for k in subspaces:  # EK-FAC on each layer's leading k x k Kronecker block
            run = in_subprocess(_skdtda_run, folder, DAMPING, k)
            scores = np.load(os.path.join(folder, f"skdtda_subspace{k}_scores.npy"))
            per_seed, mean = _agreement(scores, sk_scores)
            compressed.append(dict(subspace=k, **run, agreement_per_seed=per_seed,
                                   agreement_mean=mean))
        kf, skipped = _kronfluence(folder, kf_python, DAMPING)
        row = dict(case=name, **{k: v for k, v in case.items() if k != "kwargs"}, **prep,
                   skdtda={k: v for k, v in sk.items()}, subspaces=compressed)
        if gflops:
            macs = ekfac_macs(prep["layer_shapes"], case["n_train"], case["n_query"])
            row.update(gemm_gflops=gflops, floor_macs=macs,
                       floor_seconds=case["n_seeds"] * floor_seconds(macs, gflops))
        if kf is not None:
            kf_scores = kf.pop("scores")
            per_seed, mean = _agreement(sk_scores, kf_scores)
            row.update(kronfluence=kf, agreement_per_seed=per_seed, agreement_mean=mean,
                       speedup=kf["seconds"] / sk["seconds"],
                       memory_ratio=sk["peak_mib"] / kf["peak_mib"])
            for run in compressed:
                run["speedup"] = kf["seconds"] / run["seconds"]
                run["agreement_kronfluence"] = _agreement(
                    np.load(os.path.join(folder, f"skdtda_subspace{run['subspace']}_scores.npy")),
                    kf_scores)
            if ceiling_seeds:
                # kronfluence's Fisher samples labels: its agreement with itself under
                # other labels bounds any agreement with one of its runs
                again, _ = _kronfluence(folder, kf_python, DAMPING, "--seeds", ceiling_seeds,
                                        "--label-seed-offset", 1000, tag="_again")
                m = ceiling_seeds
                row.update(
                    ceiling_per_seed=_agreement(again["scores"], kf_scores[:m])[0],
                    ceiling_mean=_agreement(again["scores"], kf_scores[:m])[1],
                    agreement_same_seeds=_agreement(sk_scores[:m], kf_scores[:m]),
                    kronfluence_ceiling_seeds=m)
        else:
            row["kronfluence_skipped"] = skipped
        return row


def _prepare_task(folder, case, queue):
    queue.put(_prepare(folder, case))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=sorted(CASES), choices=sorted(CASES))
    parser.add_argument("--size", choices=("full", "small"), default="full",
                        help="small: case b on 16x16 images, 1000 rows, 100 queries, 2 seeds")
    parser.add_argument("--kronfluence-python", default=DEFAULT_KF_PYTHON)
    parser.add_argument("--ceiling-seeds", type=int, default=4,
                        help="rerun kronfluence with other sampled labels on this many members "
                             "(its self-agreement: the ceiling of agreement with it); 0: skip")
    parser.add_argument("--subspace", type=int, nargs="*", default=[],
                        help="also run EK-FAC with curvature_options={'subspace': k} for each "
                             "k (the compressed store), against the full EK-FAC's scores")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    gflops = gemm_gflops()
    print(f"one float32 (2048, 2048) product on one thread: {gflops:.0f} GFLOP/s")
    for name in args.cases:
        case = dict(CASES[name])
        if name == "b" and args.size == "small":
            case.update(SMALL_B)
        row = run_case(name, case, args.kronfluence_python, args.ceiling_seeds, gflops,
                       args.subspace)
        rows.append(row)
        _print_row(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


def _print_row(row):
    sk = row["skdtda"]
    print(f"\ncase {row['case']}: {row['model']} ({row['n_params']} parameters, "
          f"{sk['n_params_attributed']} attributed), {row['n_seeds']} seeds, {row['n_train']} "
          f"rows x {row['n_query']} queries; ensemble trained in {row['train_seconds']:.1f} s "
          f"(vectorized={row['vectorized']}), query accuracy {row['query_accuracy']:.3f}")
    if sk["fixed"]:
        print(f"  held fixed by skdtda: {', '.join(sk['fixed'])}")
    print(f"  skdtda EK-FAC  {sk['seconds']:8.1f} s (fit {sk['fit_seconds']:.1f} s)  "
          f"peak {sk['peak_mib']:.0f} MiB")
    if "kronfluence" in row:
        kf = row["kronfluence"]
        print(f"  kronfluence    {kf['seconds']:8.1f} s                "
              f"peak {kf['peak_mib']:.0f} MiB")
        print(f"  speed-up {row['speedup']:.2f}x (target >= 3)  memory {row['memory_ratio']:.2f}x "
              f"kronfluence's (target <= 1.5)  rank agreement per seed "
              f"{row['agreement_per_seed']:.3f}, seed-averaged {row['agreement_mean']:.3f} "
              f"(target >= 0.9)")
        if "ceiling_per_seed" in row:
            same = row["agreement_same_seeds"]
            print(f"  kronfluence against itself with other sampled labels (first "
                  f"{row['kronfluence_ceiling_seeds']} seeds): per seed "
                  f"{row['ceiling_per_seed']:.3f}, seed-averaged {row['ceiling_mean']:.3f}; "
                  f"skdtda against it on the same seeds: {same[0]:.3f}, {same[1]:.3f}")
    else:
        print(f"  {row['kronfluence_skipped']}")
    for run in row["subspaces"]:
        line = (f"  subspace {run['subspace']:4d}  {run['seconds']:8.1f} s (fit "
                f"{run['fit_seconds']:.1f} s)  peak {run['peak_mib']:.0f} MiB, store "
                f"{run['store_mib']:.1f} MiB; Spearman against the full EK-FAC per seed "
                f"{run['agreement_per_seed']:.3f}, seed-averaged {run['agreement_mean']:.3f}")
        if "speedup" in run:
            line += (f"; {run['speedup']:.2f}x kronfluence's speed, against it "
                     f"{run['agreement_kronfluence'][0]:.3f} / "
                     f"{run['agreement_kronfluence'][1]:.3f}")
        print(line)
    if "floor_seconds" in row:
        floor = row["floor_seconds"]
        parts = ", ".join(f"{k} {v / 1e9:.3g}" for k, v in row["floor_macs"].items())
        line = (f"  arithmetic floor of EK-FAC (its matrix products alone at "
                f"{row['gemm_gflops']:.0f} GFLOP/s; GMAC a seed: {parts}): {floor:.1f} s; "
                f"skdtda at {sk['seconds'] / floor:.2f}x the floor")
        if "kronfluence" in row:
            kf = row["kronfluence"]
            line += (f", kronfluence at {kf['seconds'] / floor:.2f}x; 3x kronfluence's speed "
                     f"means {kf['seconds'] / 3 / floor:.2f}x the floor")
        print(line)


if __name__ == "__main__":
    main()
