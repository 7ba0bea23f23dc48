"""Attribution at scale (issue 27): training rows x queries x seeds, time and peak memory.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --rows 100000 --queries 1000 \\
        --seeds 16 [--query-rank 8] [--precompute auto] [--json out.json]
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --sweep rows   # the scaling study

The problem is bench_precompute.py's: an MLP 32-128-128-4 (21,252 parameters,
float32) on a 4-class ``make_classification`` problem with 32 features, the seed
ensemble trained by the batched path (Adam, batch 128, 10 epochs), an
``InfluenceTransformer`` with default settings (``damping="auto"``, EK-FAC) whose
``transform`` scores every query against every training row with the statistic
streamed over seeds (the ``(n_seeds, n_query, n_train)`` array is never held).

One run (no ``--sweep``) is the issue's target: the ensemble's fit, the
transformer's fit and ``transform`` of the queries, timed each, in a fresh
process whose peak resident set (VmHWM) is the figure reported. ``--compare``
also scores the first ``--compare`` queries exactly and reports the rank
agreement (median Spearman over queries) of the run's scores with them.

``--sweep rows|queries|seeds|width`` times the transformer's fit and
``transform`` (the ensemble's fit apart, ``--sweep-damping`` fixed so that no
calibration runs) over a range of one size with the others at 8,000 rows, 100
queries, 8 seeds and two hidden layers of 128: four variants (exact without and
with the store, ``--query-rank`` without and with it; with ``--subspace k``, EK-FAC's
exact store against its compressed store, ``curvature_options={"subspace": k}``). Each
ensemble is fitted
once and saved; each variant runs in a fresh process that loads it, and its peak
is the resident set above the loaded ensemble's (VmHWM, reset through
``/proc/self/clear_refs``). It prints the growth exponent of each figure: the
slope of log time (or memory) against log size between the two largest sizes.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import in_subprocess, peak_rss_mib, reset_peak  # noqa: E402


def _problem(rows, queries, seed=0):
    from sklearn.datasets import make_classification

    X, y = make_classification(rows + queries, 32, n_informative=16, n_classes=4,
                               random_state=seed)
    X = X.astype(np.float32)
    return X[:rows], y[:rows], X[rows:]


def _ensemble(seeds, epochs, width=128):
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import SeedEnsembleClassifier
    from skdtda.nets import MLP

    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(width, width),
                              criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=1e-3, batch_size=128,
                              max_epochs=epochs, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=seeds, random_state=0)


def run(config, queue):
    """One configuration in this (fresh) process: times, peak, and agreement."""
    import torch
    from scipy.stats import spearmanr

    from skdtda import InfluenceTransformer

    torch.set_num_threads(1)
    out = dict(config)
    X, y, X_query = _problem(config["rows"], config["queries"])
    start = time.perf_counter()
    ens = _ensemble(config["seeds"], config["epochs"]).fit(X, y)
    out["ensemble_fit_s"] = time.perf_counter() - start
    settings = dict(precompute=config["precompute"], query_rank=config["query_rank"])
    if config.get("damping") is not None:
        settings["damping"] = config["damping"]
    start = time.perf_counter()
    influence = InfluenceTransformer(ens, **settings).fit(X, y)
    out["influence_fit_s"] = time.perf_counter() - start
    out["precompute_"] = bool(influence.precompute_)
    out["store_mib"] = influence.store_nbytes_ / 2**20
    out["damping_"] = float(influence.damping_)
    start = time.perf_counter()
    scores = influence.transform(X_query)
    out["transform_s"] = time.perf_counter() - start
    out["total_s"] = out["ensemble_fit_s"] + out["influence_fit_s"] + out["transform_s"]
    out["peak_mib"] = peak_rss_mib()
    out["finite"] = bool(np.isfinite(scores).all())
    n = config.get("compare") or 0
    if n:
        exact = InfluenceTransformer(ens, damping=influence.damping_, precompute=False)
        truth = exact.fit(X, y).transform(X_query[:n])
        rho = [spearmanr(scores[i], truth[i])[0] for i in range(n)]
        out["spearman_median"] = float(np.median(rho))
        out["spearman_min"] = float(np.min(rho))
        out["max_rel_diff"] = float(np.abs(scores[:n] - truth).max() / np.abs(truth).max())
    queue.put(out)


def _print(row):
    keys = ("rows", "queries", "seeds", "query_rank", "precompute_", "ensemble_fit_s",
            "influence_fit_s", "transform_s", "total_s", "peak_mib", "store_mib")
    print("  ".join(f"{k}={row[k]:.1f}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}"
                    for k in keys if k in row)
          + ("" if "spearman_median" not in row else
             f"  spearman median={row['spearman_median']:.4f} min={row['spearman_min']:.4f}"
             f" max rel diff={row['max_rel_diff']:.2e}"), flush=True)


SWEEPS = {"rows": [2000, 8000, 32000], "queries": [1, 10, 100, 1000],
          "seeds": [4, 8, 16, 32], "width": [32, 128, 512]}
SWEEP_BASE = dict(rows=8000, queries=100, seeds=8, width=128)


def fit_point(config, path, queue):
    """Fit the ensemble of ``config`` (rows, seeds, width) and save it to ``path``."""
    import joblib
    import torch

    torch.set_num_threads(1)
    X, y, _ = _problem(config["rows"], max(config["query_counts"]))
    start = time.perf_counter()
    ens = _ensemble(config["seeds"], config["epochs"], config["width"]).fit(X, y)
    fit_s = time.perf_counter() - start
    joblib.dump(ens, path)
    # the members' weights and the rows as kronfluence's worker reads them
    folder = os.path.dirname(path)
    torch.save([{k: v.detach().clone() for k, v in est.module_.state_dict().items()}
                for est in ens.estimators_], os.path.join(folder, "members.pt"))
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump({"sizes": [32, config["width"], config["width"], 4]}, f)
    queue.put({"ensemble_fit_s": fit_s})


def kronfluence_point(config, folder, python, n_query):
    """kronfluence's EK-FAC over the saved members (``bench_influence.py``'s worker),
    scoring the first ``n_query`` queries against every row: seconds and peak MiB."""
    from bench_influence import _kronfluence

    X, y, X_query = _problem(config["rows"], max(config["query_counts"]))
    # the queries' labels: make_classification's, as for the rows (timing only)
    _, labels, _ = _problem(config["rows"] + max(config["query_counts"]), 0)
    y_query = labels[config["rows"]:config["rows"] + n_query]
    np.savez(os.path.join(folder, "data.npz"), X_train=X, y_train=y,
             X_query=X_query[:n_query], y_query=y_query)
    result, skipped = _kronfluence(folder, python, config["damping"])
    if result is None:
        raise RuntimeError(skipped)
    w = config["width"]
    return dict(rows=config["rows"], seeds=config["seeds"], width=w,
                params=32 * w + w + w * w + w + 4 * w + 4, queries=n_query, kronfluence=True,
                influence_fit_s=np.nan,
                transform_s=result["seconds"], peak_mib=result["peak_mib"])


def variant_point(config, variant, path, queue):
    """One variant on the saved ensemble, in a fresh process: its fit and a
    ``transform`` per query count, and the peak resident set above the loaded
    ensemble's."""
    import joblib
    import torch

    from skdtda import InfluenceTransformer

    torch.set_num_threads(1)
    X, y, X_query = _problem(config["rows"], max(config["query_counts"]))
    ens = joblib.load(path)
    n_params = sum(p.numel() for p in ens.estimators_[0].module_.parameters())
    reset_peak()
    base = peak_rss_mib()
    start = time.perf_counter()
    influence = InfluenceTransformer(ens, damping=config["damping"], **variant).fit(X, y)
    fit_s = time.perf_counter() - start
    rows = []
    for n_query in config["query_counts"]:
        start = time.perf_counter()
        influence.transform(X_query[:n_query])
        rows.append(dict(rows=config["rows"], seeds=config["seeds"], width=config["width"],
                         params=n_params, queries=n_query, **variant,
                         precompute_=bool(influence.precompute_),
                         store_mib=influence.store_nbytes_ / 2**20,
                         influence_fit_s=fit_s, transform_s=time.perf_counter() - start,
                         peak_mib=peak_rss_mib() - base))
    queue.put(rows)


def _exponent(rows, key, size):
    """Slope of log ``key`` against log ``size`` between the two largest sizes."""
    rows = sorted(rows, key=lambda r: r[size])[-2:]
    a, b = (max(r[key], 1e-9) for r in rows)
    return np.log(b / a) / np.log(rows[1][size] / rows[0][size])


def sweep(which, args):
    variants = [dict(precompute=False, query_rank=None), dict(precompute=True, query_rank=None),
                dict(precompute=False, query_rank=args.query_rank or 8),
                dict(precompute=True, query_rank=args.query_rank or 8)]
    if args.subspace:  # the full EK-FAC's store against the compressed one, side by side
        variants = [dict(precompute=True, curvature="ekfac", curvature_options=None),
                    dict(precompute=True, curvature="ekfac",
                         curvature_options={"subspace": args.subspace})]
    points = ([dict(SWEEP_BASE, query_counts=SWEEPS["queries"])] if which == "queries" else
              [dict(SWEEP_BASE, **{which: v}, query_counts=[SWEEP_BASE["queries"]])
               for v in SWEEPS[which]])
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for point in points:
            config = dict(point, epochs=args.epochs, damping=args.sweep_damping)
            path = os.path.join(folder, "ensemble.joblib")
            fitted = in_subprocess(fit_point, config, path)
            rows = [row for variant in variants
                    for row in in_subprocess(variant_point, config, variant, path)]
            if args.kronfluence_python:
                rows += [kronfluence_point(config, folder, args.kronfluence_python, n)
                         for n in config["query_counts"]]
            for row in rows:
                row.update(fitted)
                print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in row.items()), flush=True)
                results.append(row)
    size = "params" if which == "width" else which
    print(f"\ngrowth exponents in {size} (between the two largest):")
    if args.kronfluence_python:
        variants.append(dict(kronfluence=True))
    for variant in variants:
        mine = [r for r in results if all(r.get(k) == v for k, v in variant.items())]
        print(f"  {variant}: " + ", ".join(
            f"{key} ~ {size}^{_exponent(mine, key, size):.2f}"
            for key in ("influence_fit_s", "transform_s", "peak_mib")))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--query-rank", type=int, default=None)
    parser.add_argument("--precompute", default="auto",
                        type=lambda v: {"true": True, "false": False}.get(v.lower(), v))
    parser.add_argument("--damping", type=float, default=None,
                        help="fixed damping (default: the transformer's 'auto')")
    parser.add_argument("--compare", type=int, default=0,
                        help="also score this many queries exactly and report agreement")
    parser.add_argument("--sweep", choices=sorted(SWEEPS))
    parser.add_argument("--subspace", type=int, default=None,
                        help="with --sweep: EK-FAC's store and its compressed store "
                             "(curvature_options={'subspace': k}) instead of the four variants")
    parser.add_argument("--sweep-damping", type=float, default=1e-3)
    parser.add_argument("--kronfluence-python", default=None,
                        help="with --sweep: also time kronfluence's EK-FAC (its own venv's "
                             "Python, see bench_influence.py) at every point")
    parser.add_argument("--json")
    args = parser.parse_args()
    base = dict(rows=args.rows, queries=args.queries, seeds=args.seeds, epochs=args.epochs,
                query_rank=args.query_rank, precompute=args.precompute, damping=args.damping,
                compare=args.compare)
    results = []
    if args.sweep is None:
        row = in_subprocess(run, base)
        _print(row)
        results.append(row)
    else:
        results = sweep(args.sweep, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
