"""Fit once, ask many: InfluenceTransformer with and without the training rows' store.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_precompute.py [--rows 16000] [--seeds 8]
        [--repeats 5] [--json out.json]

The problem (issue 27): an MLP 32-128-128-4 (21,252 parameters, float32) on a
4-class ``make_classification`` problem with 32 features, ``--seeds`` members
trained by the batched path (Adam, batch 128, 10 epochs), ``--rows`` training
rows. One ``InfluenceTransformer`` with default settings is fitted first (its
``damping="auto"`` value is then fixed, so that the timed fits do not calibrate
again); then, side by side in this process:

* ``fit`` with ``precompute=False`` and with ``precompute=True`` (their
  difference is the store's cost), the store's size, and each fit's peak
  resident set (VmHWM, reset before each phase through ``/proc/self/clear_refs``);
* ``transform`` of 1, 10 and 100 queries, the best of ``--repeats`` runs each
  (the sides interleaved), with and without the store, and the largest
  difference of their scores relative to the largest score; and with the store
  and ``query_rank=--query-rank`` (rank-R queries), with the median Spearman of
  its scores against the exact ones over the queries; and (where the default
  curvature is EK-FAC or K-FAC) with the compressed store of
  ``curvature_options={"subspace": --subspace}``, with the same Spearman;
* self-influence of every training row (``DataPruner(objective="self")``'s
  scores): the old path (training rows as queries in chunks, keeping the
  diagonal) against ``self_influence_samples`` with and without the store;
* every training row scored against a validation set of 1,000 rows (the
  pruner's ``objective="validation"``): the old path (``influence_samples`` of
  validation chunks, summed) against ``mean_influence_samples`` with and
  without the store.

The machine may be shared: ratios measured in one run are what to compare.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.datasets import make_classification
from skorch import NeuralNetClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak_rss_mib, reset_peak  # noqa: E402

from skdtda import InfluenceTransformer, SeedEnsembleClassifier  # noqa: E402
from skdtda._loops import chunks  # noqa: E402
from skdtda.nets import MLP  # noqa: E402


def timed(fn, repeats=1):
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def old_self_influence(influence, X, y, n_rows):
    """DataPruner(objective="self")'s scores before issue 27 for the first
    ``n_rows`` training rows: training rows as queries, chunk by chunk, keeping
    the diagonal (each chunk scores all training rows)."""
    delta = np.empty((len(influence.members_), n_rows))
    for rows in chunks(n_rows, influence.batch_size):
        block = influence.influence_samples(X[rows], y[rows])
        local = np.arange(rows.stop - rows.start)
        delta[:, rows] = block[:, local, rows.start + local]
    return delta


def old_validation(influence, X_val, y_val):
    """DataPruner(objective="validation")'s scores before issue 27."""
    delta = 0.0
    for rows in chunks(len(X_val), influence.batch_size):
        delta = delta + influence.influence_samples(X_val[rows], y_val[rows]).sum(axis=1)
    return delta / len(X_val)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16000)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old-self-rows", type=int, default=1024,
                        help="rows the old self-influence path is timed on (its cost is "
                             "linear in them: every chunk scores all training rows)")
    parser.add_argument("--transform-only", action="store_true",
                        help="stop after the transform table (skip self-influence and "
                             "validation)")
    parser.add_argument("--query-rank", type=int, default=8,
                        help="the rank of the third side, precompute=True with query_rank")
    parser.add_argument("--subspace", type=int, default=32,
                        help="the compressed store's side: curvature_options={'subspace': k}")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = make_classification(args.rows + 1100, 32, n_informative=16, n_classes=4,
                               random_state=0)
    X = X.astype(np.float32)
    X_train, y_train = X[:args.rows], y[:args.rows]
    X_query, X_val, y_val = X[args.rows:args.rows + 100], X[-1000:], y[-1000:]
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(128, 128),
                              criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.Adam, lr=1e-3, batch_size=128,
                              max_epochs=10, train_split=None, verbose=0)
    start = time.perf_counter()
    ens = SeedEnsembleClassifier(net, n_seeds=args.seeds, random_state=0).fit(X_train, y_train)
    print(f"ensemble: {args.seeds} seeds x {args.rows} rows, fit {time.perf_counter() - start:.1f}"
          f" s (vectorized: {ens.vectorized_})")
    start = time.perf_counter()
    default = InfluenceTransformer(ens, precompute=False).fit(X_train, y_train)
    print(f"default InfluenceTransformer fit {time.perf_counter() - start:.1f} s: curvature "
          f"{default.curvature_!r}, damping {default.damping_:.3g}, "
          f"{default.n_params_attributed_} parameters")
    settings = dict(curvature=default.curvature_, damping=default.damping_)
    results = {"rows": args.rows, "seeds": args.seeds, **settings}

    fitted = {}
    for precompute in (False, True):
        reset_peak()
        base = peak_rss_mib()
        t, fitted[precompute] = timed(lambda: InfluenceTransformer(
            ens, precompute=precompute, **settings).fit(X_train, y_train))
        results[f"fit_{precompute}"] = t
        results[f"fit_peak_{precompute}"] = peak_rss_mib() - base
    store = fitted[True]
    results["store_mib"] = store.store_nbytes_ / 2**20
    print(f"\nfit: precompute=False {results['fit_False']:.2f} s, True "
          f"{results['fit_True']:.2f} s (store {results['fit_True'] - results['fit_False']:.2f}"
          f" s, {results['store_mib']:.1f} MiB; peak RSS above the start "
          f"{results['fit_peak_False']:.0f} / {results['fit_peak_True']:.0f} MiB)")

    rank = args.query_rank
    fitted["rank"] = InfluenceTransformer(ens, precompute=True, query_rank=rank,
                                          **settings).fit(X_train, y_train)
    sides = [False, True, "rank"]
    if settings["curvature"] in ("ekfac", "kfac"):
        fitted["subspace"] = InfluenceTransformer(
            ens, precompute=True, curvature_options={"subspace": args.subspace},
            **settings).fit(X_train, y_train)
        sides.append("subspace")
        results["subspace_store_mib"] = fitted["subspace"].store_nbytes_ / 2**20
    print(f"\n{'queries':>8} {'False (s)':>10} {'True (s)':>10} {'ratio':>8} {'max rel diff':>13}"
          f" {'peak MiB F/T':>13} {f'rank {rank} (s)':>12} {'ratio':>8} {'Spearman':>9}"
          + (f" {f'subspace {args.subspace} (s)':>16} {'ratio':>8} {'Spearman':>9}"
             if "subspace" in sides else ""))
    for n_query in (1, 10, 100):
        row = {**{side: np.inf for side in sides}, **{f"peak_{side}": 0.0 for side in sides}}
        scores = {}
        # interleaved, best of the repeats: all sides see the same load
        for _ in range(args.repeats):
            for side in sides:
                reset_peak()
                base = peak_rss_mib()
                t, scores[side] = timed(lambda: fitted[side].transform(X_query[:n_query]))
                row[side] = min(row[side], t)
                row[f"peak_{side}"] = max(row[f"peak_{side}"], peak_rss_mib() - base)
        diff = rel(scores[True], scores[False])
        rho = float(np.median([spearmanr(a, b)[0] for a, b in zip(scores["rank"],
                                                                   scores[False])]))
        results[f"transform_{n_query}"] = {
            "False": row[False], "True": row[True], "rel_diff": diff,
            "peak_False": row["peak_False"], "peak_True": row["peak_True"],
            "rank": row["rank"], "rank_spearman": rho, "peak_rank": row["peak_rank"]}
        line = (f"{n_query:>8} {row[False]:>10.3f} {row[True]:>10.4f} "
                f"{row[True] / row[False]:>8.1%} {diff:>13.2e} "
                f"{row['peak_False']:>6.0f}/{row['peak_True']:<6.0f} {row['rank']:>12.4f} "
                f"{row['rank'] / row[False]:>8.1%} {rho:>9.4f}")
        if "subspace" in sides:
            rho_sub = float(np.median([spearmanr(a, b)[0] for a, b in zip(scores["subspace"],
                                                                          scores[False])]))
            results[f"transform_{n_query}"].update(subspace=row["subspace"],
                                                   subspace_spearman=rho_sub)
            line += (f" {row['subspace']:>16.4f} {row['subspace'] / row[False]:>8.1%} "
                     f"{rho_sub:>9.4f}")
        print(line)

    if args.transform_only:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return
    print("\nself-influence of every training row (DataPruner objective='self'):")
    new_false, self_false = timed(lambda: fitted[False].self_influence_samples())
    new_true, self_true = timed(lambda: fitted[True].self_influence_samples())
    results["self"] = {"new_False": new_false, "new_True": new_true,
                       "rel_diff": rel(self_true, self_false)}
    m = min(args.old_self_rows, args.rows)
    old, self_old = timed(lambda: old_self_influence(fitted[False], X_train, y_train, m))
    old_all = old * args.rows / m
    results["self"].update(old_measured=old, old_rows=m, old=old_all,
                           old_rel_diff=rel(self_false[:, :m], self_old))
    print(f"  before issue 27 (rows as queries, diagonal kept): {old:.1f} s for {m} rows, "
          f"so {old_all:.0f} s for all {args.rows}")
    print(f"  self_influence_samples, precompute=False: {new_false:.2f} s; True: "
          f"{new_true:.2f} s; max rel diff {results['self']['rel_diff']:.1e} (old vs new "
          f"{results['self']['old_rel_diff']:.1e})")

    print("\nevery training row against 1000 validation rows (objective='validation'):")
    old, val_old = timed(lambda: old_validation(fitted[False], X_val, y_val))
    old_store, _ = timed(lambda: old_validation(fitted[True], X_val, y_val))
    new_false, val_false = timed(lambda: fitted[False].mean_influence_samples(X_val, y_val))
    new_true, val_true = timed(lambda: fitted[True].mean_influence_samples(X_val, y_val))
    results["validation"] = {"old": old, "old_store": old_store, "new_False": new_false,
                             "new_True": new_true, "rel_diff": rel(val_true, val_old)}
    print(f"  before issue 27 (influence_samples of chunks, summed): {old:.2f} s; the same "
          f"with the store: {old_store:.2f} s")
    print(f"  mean_influence_samples, precompute=False: {new_false:.2f} s; True: "
          f"{new_true:.3f} s; max rel diff to the old path {results['validation']['rel_diff']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
