"""Influence-based data pruning on digits: distributional vs fixed-seed vs random.

The paper's pruning experiment (section 5, Fig. 6) at CPU scale. Run with one
intra-op thread, as all figures in docs/pruning.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_pruning.py [--quick] [--json out.json]
        [--plot docs/pruning.png] [--split-seed 0]
    OMP_NUM_THREADS=1 python benchmarks/bench_pruning.py --grid

Setting: scikit-learn's digits (1797 rows, 64 features, 10 classes), standardised
on the training rows; a stratified split into 1000 training, 300 validation and
497 test rows. Two conditions: the labels as they are ("clean"), and 10% of the
training labels replaced by a different random class ("10% flipped"); validation
and test labels are never flipped. The model is ``SeedEnsembleClassifier``'s
default net (one hidden layer of 32 units, SGD lr 0.05 momentum 0.9, batch 32,
30 epochs) with 10 seeds (``random_state=0``).

Scoring: ``DataPruner(InfluenceTransformer(ensemble), validation_data=(X_val,
y_val))``, EK-FAC with damping 1e-3, score = predicted change of the mean
validation cross-entropy when the row is removed; the rows with the most
negative scores are removed. The three methods, as in the paper:

* distributional: the mean of the 10 seeds' scores, one common pruned set; the
  same 10 seeds are retrained on it.
* fixed-seed: for each seed s, that seed's scores alone choose its pruned set,
  and seed s is retrained on it (the classical baseline).
* random: for each seed s, its own uniformly random pruned set.

Retraining seed s means member s of ``clone(ensemble).fit(X_kept, y_kept)``: the
same initialisation seed and minibatch-order generator seed as in the unpruned
run. Reported: test accuracy and test loss (mean cross-entropy) over the 10
seeds, mean +- standard error, and the paired (same seed) difference to the
unpruned run. ``--quick``: 4 seeds, 10% pruning only. ``--split-seed`` redraws
the train/validation/test split and the flipped rows (the ensemble seeds stay).

``--grid`` instead times ``GridSearchCV(PrunedEstimator(...), {"pruner__fraction":
[0.05, 0.1, 0.2]}, cv=3)`` on the flipped-label training rows (a 4-seed ensemble,
cross-fitted validation folds, ``validation_fraction=0.5``, LogisticRegression
retrained), with and without ``memory=``.
"""

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from joblib import Memory
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from skdtda import DataPruner, InfluenceTransformer, SeedEnsembleClassifier

torch.set_num_threads(1)


def load(noise, seed=0):
    X, y = load_digits(return_X_y=True)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, train_size=1000, stratify=y,
                                                        random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(X_rest, y_rest, train_size=300,
                                                    stratify=y_rest, random_state=seed)
    scaler = StandardScaler().fit(X_train)
    X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
    flipped = np.array([], dtype=int)
    if noise:
        rng = np.random.RandomState(seed)
        flipped = rng.choice(len(y_train), int(noise * len(y_train)), replace=False)
        y_train = y_train.copy()
        y_train[flipped] = (y_train[flipped] + rng.randint(1, 10, len(flipped))) % 10
    return X_train, y_train, X_val, y_val, X_test, y_test, flipped


def member_metrics(ensemble, X_test, y_test):
    """Per-seed test accuracy and mean test cross-entropy, each of shape (n_seeds,)."""
    accuracy = (ensemble.predict_members(X_test) == y_test).mean(axis=1)
    loss = ensemble.measure(X_test, y_test, "loss").mean(axis=1)
    return accuracy, loss


def per_seed_retrain(ensemble, X, y, masks, X_test, y_test):
    """Seed s retrained on its own kept rows masks[s]; returns per-seed metrics."""
    accuracy, loss = np.empty(len(masks)), np.empty(len(masks))
    for s, mask in enumerate(masks):
        refit = clone(ensemble).fit(X[mask], y[mask])
        acc, lss = member_metrics(refit, X_test, y_test)
        accuracy[s], loss[s] = acc[s], lss[s]
    return accuracy, loss


def mean_se(values):
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def run_condition(noise, n_seeds, fractions, memory, split_seed=0):
    X, y, X_val, y_val, X_test, y_test, flipped = load(noise, split_seed)
    ensemble = SeedEnsembleClassifier(n_seeds=n_seeds, random_state=0)
    influence = InfluenceTransformer(ensemble, curvature="ekfac", damping=1e-3)
    start = time.perf_counter()
    baseline = member_metrics(clone(ensemble).fit(X, y), X_test, y_test)
    results = {"unpruned": {"accuracy": baseline[0].tolist(), "loss": baseline[1].tolist()}}
    timings = {}
    for fraction in fractions:
        common = dict(fraction=fraction, validation_data=(X_val, y_val), memory=memory)
        t0 = time.perf_counter()
        dist = DataPruner(influence, **common).fit(X, y)
        timings.setdefault("scoring (ensemble fit + curvature + influence)",
                           time.perf_counter() - t0)
        fixed_masks = [DataPruner(influence, mode="fixed_seed", seed_index=s, **common)
                       .fit(X, y).sample_mask_ for s in range(n_seeds)]
        random_masks = [DataPruner(fraction=fraction, mode="random", random_state=1000 + s)
                        .fit(X, y).sample_mask_ for s in range(n_seeds)]
        dist_metrics = member_metrics(clone(ensemble).fit(X[dist.sample_mask_],
                                                          y[dist.sample_mask_]), X_test, y_test)
        fixed_metrics = per_seed_retrain(ensemble, X, y, fixed_masks, X_test, y_test)
        random_metrics = per_seed_retrain(ensemble, X, y, random_masks, X_test, y_test)
        for name, metrics, masks in (("distributional", dist_metrics, [dist.sample_mask_]),
                                     ("fixed-seed", fixed_metrics, fixed_masks),
                                     ("random", random_metrics, random_masks)):
            found = [int(np.isin(np.flatnonzero(~m), flipped).sum()) for m in masks]
            results[f"{name} {fraction:g}"] = {
                "accuracy": metrics[0].tolist(), "loss": metrics[1].tolist(),
                "flipped_removed": float(np.mean(found)), "removed": int((~masks[0]).sum())}
    timings["total"] = time.perf_counter() - start
    return results, timings, len(flipped)


def print_table(title, results, n_flipped):
    base_acc, base_loss = (np.asarray(results["unpruned"][k]) for k in ("accuracy", "loss"))
    print(f"\n{title}")
    print(f"{'method':22s} {'test accuracy':>17s} {'d acc vs unpruned':>19s} "
          f"{'test loss':>17s} {'d loss vs unpruned':>19s} {'flipped removed':>16s}")
    for name, r in results.items():
        acc, loss = np.asarray(r["accuracy"]), np.asarray(r["loss"])
        a, a_se = mean_se(acc)
        lo, lo_se = mean_se(loss)
        da, da_se = mean_se(acc - base_acc)
        dl, dl_se = mean_se(loss - base_loss)
        found = (f"{r['flipped_removed']:.1f}/{n_flipped}" if n_flipped and "flipped_removed" in r
                 else "")
        print(f"{name:22s} {a:8.4f} +- {a_se:.4f} {da:+9.4f} +- {da_se:.4f} "
              f"{lo:8.4f} +- {lo_se:.4f} {dl:+9.4f} +- {dl_se:.4f} {found:>16s}")
    for fraction in sorted({float(k.split()[-1]) for k in results if k != "unpruned"}):
        d = np.asarray(results[f"distributional {fraction:g}"]["accuracy"])
        f = np.asarray(results[f"fixed-seed {fraction:g}"]["accuracy"])
        dl = np.asarray(results[f"distributional {fraction:g}"]["loss"])
        fl = np.asarray(results[f"fixed-seed {fraction:g}"]["loss"])
        m, se = mean_se(d - f)
        ml, sel = mean_se(dl - fl)
        print(f"  distributional - fixed-seed at {fraction:g}: accuracy {m:+.4f} +- {se:.4f}, "
              f"loss {ml:+.4f} +- {sel:.4f} (paired by seed)")


def plot(all_results, fractions, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skdtda.plotting import plot_pruning_curve

    fig, axes = plt.subplots(2, len(all_results), figsize=(5 * len(all_results), 7),
                             squeeze=False)
    xs = [0.0, *fractions]
    for col, (title, results) in enumerate(all_results.items()):
        for row, metric in enumerate(("accuracy", "loss")):
            means, errors = {}, {}
            for method in ("distributional", "fixed-seed", "random"):
                stats = [mean_se(results["unpruned"][metric])] + [
                    mean_se(results[f"{method} {f:g}"][metric]) for f in fractions]
                means[method] = [m for m, _ in stats]
                errors[method] = [se for _, se in stats]
            n_seeds = len(results["unpruned"][metric])
            ax = plot_pruning_curve(xs, means, errors, ax=axes[row, col],
                                    ylabel=f"test {metric} (mean +- s.e., {n_seeds} seeds)")
            ax.set_title(f"digits, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def time_grid():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    from skdtda import PrunedEstimator

    X, y, *_ = load(0.1)
    for label in ("without memory", "with memory"):
        with tempfile.TemporaryDirectory() as cache:
            memory = Memory(cache, verbose=0) if label == "with memory" else None
            model = PrunedEstimator(
                DataPruner(InfluenceTransformer(SeedEnsembleClassifier(n_seeds=4,
                                                                       random_state=0)),
                           validation_fraction=0.5, random_state=0),
                LogisticRegression(C=0.1, max_iter=500), memory=memory)
            search = GridSearchCV(model, {"pruner__fraction": [0.05, 0.1, 0.2]}, cv=3)
            t0 = time.perf_counter()
            search.fit(X, y)
            print(f"GridSearchCV, 3 fractions x 3 folds + refit, {label}: "
                  f"{time.perf_counter() - t0:.1f} s, best {search.best_params_}, "
                  f"cv accuracy {search.best_score_:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write the per-seed results here")
    parser.add_argument("--plot", help="write the figure here (e.g. docs/pruning.png)")
    parser.add_argument("--grid", action="store_true",
                        help="time a GridSearchCV over the fraction with and without memory")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the data split and of the flipped labels")
    args = parser.parse_args()
    if args.grid:
        time_grid()
        return
    n_seeds, fractions = (4, [0.1]) if args.quick else (10, [0.05, 0.1, 0.2])
    all_results = {}
    with tempfile.TemporaryDirectory() as cache:
        memory = Memory(cache, verbose=0)
        for title, noise in (("clean labels", 0.0), ("10% flipped labels", 0.1)):
            results, timings, n_flipped = run_condition(noise, n_seeds, fractions, memory,
                                                        args.split_seed)
            all_results[title] = results
            print_table(f"digits, {title}: {n_seeds} seeds, 1000 training rows, split seed "
                        f"{args.split_seed}", results, n_flipped)
            print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(all_results, f, indent=1)
    if args.plot:
        plot(all_results, fractions, args.plot)


if __name__ == "__main__":
    main()
