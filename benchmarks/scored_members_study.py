"""How many attributed members the calibration needs to score its candidates with.

    OMP_NUM_THREADS=1 python benchmarks/scored_members_study.py --truth /tmp/truth \
        --out /tmp/study --recipes a,b            # record, one file per recipe
    OMP_NUM_THREADS=1 python benchmarks/scored_members_study.py --truth /tmp/truth \
        --out /tmp/study --recipes a,b --report   # the replay

The calibration scores each candidate damping with the first
``skdtda.influence._calibration.SCORED_MEMBERS`` members (16 until 2026-12-07);
on the exact GGN each scored member costs an eigendecomposition, which bounds the
calibration's cost on the digits MLP and CNN. This study records, per recipe of
``benchmarks/recipes.py``, what the calibration's choice reads with every member's
predicted samples kept apart (``--out/<recipe>.members.npz``), and replays the
choice (``skdtda.influence._calibration.choose``) with the first k members for k in
:data:`COUNTS` (and, for k < 16, with each disjoint block of k members among the
first 16, to see the noise of the draw). The chosen damping is scored against the
truth at that candidate, read from ``--out/<recipe>.choice.json`` of
``benchmarks/calibration_choice_study.py`` (recorded first, with the same rule).
Printed per k: the recipe x score cells within 0.03 of the best fixed damping, the
worst shortfall, and how often the choice equals the one with 16 members.
"""

import json
import warnings
from pathlib import Path

import numpy as np

import recipes
from calibration_choice_study import study_main, tally
from skdtda import InfluenceTransformer
from skdtda.influence import _calibration

COUNTS = (4, 8, 12, 16)


def record(name, truth_folder, out):
    """Calibrate the recipe's ensemble once and keep every scored member's samples."""
    r = recipes.recipe(name)
    seen = {}
    original_samples, original_choose = _calibration.predicted_samples, _calibration.choose

    def samples(*args, **kwargs):
        before, after = original_samples(*args, **kwargs)
        seen.update(members_before=before, members_after=after)
        return before, after

    def choose(predicted, retrained, n_large, factors, **kwargs):
        seen.update(before=retrained[0], after=retrained[1], n_large=n_large,
                    factors=factors)
        return original_choose(predicted, retrained, n_large, factors, **kwargs)

    scored = _calibration.SCORED_MEMBERS
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        ens = r.ensemble.fit(r.X_train, r.y_train)
        # the first 16 members' samples, whatever the default scores (the replay takes
        # the first k of them: k = 8 is the default since 2026-12-07, 16 the one before)
        _calibration.predicted_samples, _calibration.choose = samples, choose
        _calibration.SCORED_MEMBERS = 16
        try:
            calibrated = InfluenceTransformer(ens, measurement=r.measurement,
                                              damping="calibrate").fit(r.X_train, r.y_train)
        finally:
            _calibration.predicted_samples, _calibration.choose = original_samples, \
                original_choose
            _calibration.SCORED_MEMBERS = scored
    table = calibrated.calibration_
    n_cand = len(table.damping)
    np.savez(Path(out) / f"{name}.members.npz", rule=float(table.rule),
             chosen=int(table.chosen), members_before=seen["members_before"],
             members_after=seen["members_after"][:n_cand], before=seen["before"],
             after=seen["after"], n_large=seen["n_large"], factors=seen["factors"])
    print(name, "recorded: rule", f"{float(table.rule):.4g}", "chosen", int(table.chosen),
          flush=True)


def replay(data, members):
    """The candidate the choice takes with the predicted changes of these members."""
    before, after = data["members_before"][members], data["members_after"][:, :, members]
    predicted = _calibration._changes_of_mean(before, after)
    chosen, *_ = _calibration.choose(predicted, (data["before"], data["after"]),
                                     int(data["n_large"]), data["factors"])
    return chosen


def measured_lds(data, members, candidate):
    """The calibration's own mean-LDS of a candidate (what ``fidelity_`` reports, before
    the ceiling's correction) with the predicted samples of these members."""
    before, after = data["members_before"][members], data["members_after"][:, :, members]
    n_large = int(data["n_large"])
    r = _calibration.correlations(before, after[candidate], (data["before"], data["after"]),
                                  slice(0, n_large), "mean", "spearman")
    return float(np.nanmean(r))


def report(names, out):
    loaded = []
    for name in names:
        result = json.loads((Path(out) / f"{name}.choice.json").read_text())
        data = dict(np.load(Path(out) / f"{name}.members.npz"))
        if not np.isclose(result["rule"], float(data["rule"]), rtol=1e-6):
            raise ValueError(f"{name}: the rule moved ({result['rule']} against "
                             f"{float(data['rule'])}); rerun calibration_choice_study.py")
        loaded.append((result, data))
    print(f"{'members':>8} {'draw':>5}  cells within 0.03   worst   same as 16   "
          "fidelity's LDS less 16's   per recipe (chosen factor)")
    for k in COUNTS:
        for draw in range(16 // k if k < 16 else 1):
            members = np.arange(draw * k, (draw + 1) * k)
            same, choices, picks, lost = 0, [], [], []
            for result, data in loaded:
                full = replay(data, np.arange(16))
                chosen = replay(data, members)
                same += chosen == full
                lost.append(measured_lds(data, members, chosen)
                            - measured_lds(data, np.arange(16), chosen))
                choices.append((result, chosen))
                picks.append(f"{result['recipe']}={data['factors'][chosen]:.2g}")
            within, cells, worst = tally(choices)
            print(f"{k:>8} {draw:>5}  {within:>3} / {cells:<3} {worst:>+12.2f}   "
                  f"{same:>3} / {len(loaded):<3}   {np.mean(lost):>+8.3f} "
                  f"(worst {min(lost):+.2f})   " + " ".join(picks))


def main(argv=None):
    study_main(__doc__, record, report, ".members.npz", argv)


if __name__ == "__main__":
    main()
