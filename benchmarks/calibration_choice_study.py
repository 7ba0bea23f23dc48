"""How the calibration's choice (its penalty per decade and its guard) serves the truth.

    OMP_NUM_THREADS=1 python benchmarks/calibration_choice_study.py --truth /tmp/truth \
        --out /tmp/study --recipes a,b            # record, one file per recipe
    OMP_NUM_THREADS=1 python benchmarks/calibration_choice_study.py --truth /tmp/truth \
        --out /tmp/study --recipes a,b --report   # the sweep

For each recipe of ``benchmarks/recipes.py`` (its 256-seed truth from ``recipes.py
--truth``), the recipe's ensemble is fitted and calibrated once with
``damping="calibrate"`` (its defaults); what the calibration's choice reads (each
candidate's predicted changes of the mean, and the retraining's samples) is kept,
and the truth's LOO, mean-LDS and variance-LDS are measured at every candidate
damping and at the fixed grid {1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3} (variance-LDS from
a transformer fitted for the variance, re-damped to its multiple of each damping).
Files: ``--out/<recipe>.choice.npz`` and ``--out/<recipe>.choice.json``.

``--report`` replays the choice (``skdtda.influence._calibration.choose``) for every
pair of a penalty per decade and a guard, and prints, per pair, how many recipe x
score cells the chosen damping puts within 0.03 of the best fixed damping, and the
worst shortfall.
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

import recipes
from damping_transfer import TARGET_GRID, redamp, score
from skdtda import InfluenceTransformer
from skdtda.influence import _calibration

SCORES = ("loo", "mean", "variance")
PENALTIES = (0.0, 0.025, 0.05, 0.1)
GUARDS = (0.0, 0.8, 0.9, 0.95)


def record(name, truth_folder, out):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    seen = {}
    original = _calibration.choose

    def keep(predicted, retrained, n_large, factors, **kwargs):
        seen.update(predicted=predicted, before=retrained[0], after=retrained[1],
                    n_large=n_large, factors=factors)
        return original(predicted, retrained, n_large, factors, **kwargs)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        ens = r.ensemble.fit(r.X_train, r.y_train)
        _calibration.choose = keep
        try:
            calibrated = InfluenceTransformer(ens, measurement=r.measurement,
                                              damping="calibrate").fit(r.X_train, r.y_train)
        finally:
            _calibration.choose = original
        table = calibrated.calibration_
        mean = InfluenceTransformer(ens, measurement=r.measurement,
                                    calibration_budget=0).fit(r.X_train, r.y_train)
        spread = InfluenceTransformer(ens, measurement=r.measurement, statistic="variance",
                                      calibration_budget=0).fit(r.X_train, r.y_train)
    ratio = spread.damping_ / mean.damping_
    dampings = list(map(float, table.damping)) + list(TARGET_GRID)
    truth = []
    for damping in dampings:
        scores = score(redamp(mean, damping), r, truth_loo, truth_lds,
                       redamp(spread, damping * ratio))
        truth.append({k: float(scores[k]) for k in SCORES})
        print(name, f"{damping:.3g}", {k: round(v, 3) for k, v in truth[-1].items()},
              flush=True)
    np.savez(Path(out) / f"{name}.choice.npz", **seen)
    result = {"recipe": name, "group": r.group, "rule": float(table.rule),
              "chosen": int(table.chosen), "n_candidates": len(table.damping),
              "dampings": dampings, "truth": truth}
    (Path(out) / f"{name}.choice.json").write_text(json.dumps(result, indent=1))


def replay(data, penalty, guard):
    """The candidate the choice takes with this penalty and guard."""
    saved = _calibration.PENALTY, _calibration.GUARD
    _calibration.PENALTY, _calibration.GUARD = penalty, guard
    try:
        chosen, *_ = _calibration.choose(data["predicted"], (data["before"], data["after"]),
                                         int(data["n_large"]), data["factors"])
    finally:
        _calibration.PENALTY, _calibration.GUARD = saved
    return chosen


def shortfalls(result, chosen):
    """Each score's truth at candidate ``chosen`` less the best fixed damping's, from a
    ``<recipe>.choice.json`` result: {score: difference}."""
    n = result["n_candidates"]
    got = result["truth"][chosen]
    return {k: got[k] - max(t[k] for t in result["truth"][n:]) for k in SCORES}


def tally(choices):
    """``(within, cells, worst)`` over ``(result, chosen)`` pairs: the recipe x score cells
    within 0.03 of the best fixed damping, their number, and the worst shortfall (at most 0)."""
    shorts = [short for result, chosen in choices
              for short in shortfalls(result, chosen).values()]
    return sum(short >= -0.03 for short in shorts), len(shorts), min([0.0, *shorts])


def report(names, out):
    loaded = []
    for name in names:
        result = json.loads((Path(out) / f"{name}.choice.json").read_text())
        loaded.append((result, dict(np.load(Path(out) / f"{name}.choice.npz"))))
    print(f"{'penalty':>8} {'guard':>6}  cells within 0.03   worst   per recipe (chosen factor)")
    for penalty in PENALTIES:
        for guard in GUARDS:
            choices = [(result, replay(data, penalty, guard)) for result, data in loaded]
            within, cells, worst = tally(choices)
            picks = [f"{result['recipe']}={data['factors'][chosen]:.2g}"
                     for (result, chosen), (_, data) in zip(choices, loaded)]
            print(f"{penalty:>8} {guard:>6}  {within:>3} / {cells:<3} {worst:>+12.2f}   "
                  + " ".join(picks))


def study_main(doc, record, report, suffix, argv=None):
    """A study's command line: ``record(name, truth, out)`` for each recipe whose
    ``--out/<name><suffix>`` is missing, or ``report(names, out)`` with ``--report``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--recipes", required=True)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.recipes.split(",")
    if args.report:
        report(names, args.out)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (Path(args.out) / f"{name}{suffix}").exists():
            record(name, args.truth, args.out)


def main(argv=None):
    study_main(__doc__, record, report, ".choice.json", argv)


if __name__ == "__main__":
    main()
