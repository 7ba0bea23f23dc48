"""How much the best damping depends on which rows are asked about.

    OMP_NUM_THREADS=1 python benchmarks/query_dependence.py --truth /tmp/truth \
        --out /tmp/query-dependence [--recipes a,b] [--draws 4] [--report]

The calibration (``damping="calibrate"``) and the ground truth of
``benchmarks/recipes.py`` measure different rows: the truth its recipe's 40 test
rows, the calibration 40 training rows that its retraining holds out. Where they
disagree on the best damping, is it the protocol (4 retrained seeds, 20 + 20 sets,
8 scored members) or the rows?

For each recipe the calibration's own machinery (its retraining, candidates and
scores; only the draw of queries and sets is replaced) is run

- on the truth's 40 test rows as queries, with the ensemble fitted on the training
  and test rows together (sets drawn from the 300 training rows, whose retraining
  is then the truth's own, with 4 seeds);
- on ``--draws`` draws of 40 training rows as queries (sets drawn from the others),
  with the recipe's ensemble on its training rows, as the defaults run.

It prints each draw's large-set LDS at every candidate (multiples of the rule's
damping), the candidate the calibration chose, and beside them the truth's mean-LDS
at the same multiples (the recipe's own 32-seed ensemble on the training rows,
re-damped; 256 retrained seeds). Each recipe's result goes to ``--out/<recipe>.json``;
``--report`` prints the table of what is there.
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

import recipes
from damping_transfer import redamp
from skdtda import InfluenceTransformer
from skdtda.evaluation import lds, predict_distributions
from skdtda.influence import _calibration

N_QUERIES = 40


def _draw(query_rows, pool, seed):
    """A replacement for :func:`skdtda.influence._calibration.draw_sets` with the query
    rows given and the sets drawn from ``pool`` (same sizes and split as the original)."""
    def draw(y, n_sets, n_queries, random_state, classifier):
        rng = np.random.RandomState(seed)
        n_large = n_sets - n_sets // 2
        masks = np.zeros((n_sets, len(y)), dtype=bool)
        for j in range(n_sets):
            share = _calibration.LARGE if j < n_large else _calibration.SMALL
            masks[j, rng.choice(pool, int(round(share * len(pool))), replace=False)] = True
        return np.sort(query_rows), masks, n_large
    return draw


def _calibrated(ensemble, r, X, y, queries, pool, seed):
    original = _calibration.draw_sets
    _calibration.draw_sets = _draw(queries, pool, seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = InfluenceTransformer(ensemble, measurement=r.measurement,
                                          damping="calibrate", calibration_budget=8,
                                          calibration_options={"queries": N_QUERIES}).fit(X, y)
    finally:
        _calibration.draw_sets = original
    table = fitted.calibration_
    return {"large": [float(v) for v in table.mean], "chosen": int(table.chosen),
            "rule": float(table.rule), "fidelity": float(fitted.fidelity_.lds),
            "fidelity_interval": [float(v) for v in fitted.fidelity_.interval]}


def _truth_curve(r, truth_folder):
    """The truth's mean-LDS at the calibration's multiples of the rule's damping."""
    _, lds_truth = recipes.truth(r, truth_folder)
    ensemble = clone(r.ensemble).fit(r.X_train, r.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        influence = InfluenceTransformer(ensemble, measurement=r.measurement,
                                         calibration_budget=0).fit(r.X_train, r.y_train)
        rule = influence.damping_
        curve = [lds(predict_distributions(redamp(influence, rule * factor), r.X_query,
                                           r.y_query, remove=r.subsets), lds_truth, "mean")
                 for factor in _calibration.FACTORS]
    return {"rule": float(rule), "curve": curve}


def study(name, truth_folder, draws):
    r = recipes.recipe(name)
    X = np.concatenate([r.X_train, r.X_query])
    y = np.concatenate([r.y_train, r.y_query])
    n_train = len(r.X_train)
    out = {"recipe": name, "truth": _truth_curve(r, truth_folder),
           "test_rows": _calibrated(clone(r.ensemble).fit(X, y), r, X, y,
                                    np.arange(n_train, len(X)), np.arange(n_train), 0)}
    # the defaults' case: the recipe's ensemble on its training rows
    ensemble = clone(r.ensemble).fit(r.X_train, r.y_train)
    rng = np.random.RandomState(1)
    out["training_rows"] = []
    for k in range(draws):
        queries = rng.choice(n_train, N_QUERIES, replace=False)
        pool = np.setdiff1d(np.arange(n_train), queries)
        out["training_rows"].append(_calibrated(ensemble, r, r.X_train, r.y_train, queries,
                                                pool, 1 + k))
    return out


def report(folder):
    factors = _calibration.FACTORS
    print("multiples of the rule:", " ".join(f"{f:5.2g}" for f in factors))
    for path in sorted(Path(folder).glob("*.json")):
        res = json.load(open(path))
        print(f"\n{res['recipe']}")
        rows = [("truth (256 seeds, test rows)", res["truth"]["curve"], None)]
        rows.append(("calibration on the test rows", res["test_rows"]["large"],
                     res["test_rows"]["chosen"]))
        rows += [(f"calibration, training rows #{k}", d["large"], d["chosen"])
                 for k, d in enumerate(res["training_rows"])]
        for label, curve, chosen in rows:
            best = factors[int(np.argmax(curve))]
            mark = "" if chosen is None else f" chose x{factors[chosen]:.2g}"
            print(f"  {label:32s} " + " ".join(f"{v:5.2f}" for v in curve)
                  + f" | argmax x{best:.2g}{mark}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", default="breast-adamw")
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        recipes.run_missing(args.recipes.split(","), out, ".json", study, args.truth,
                            args.draws)
    report(out)


if __name__ == "__main__":
    main()
