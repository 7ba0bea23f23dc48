"""EK-FAC's output-Hessian columns, one random combination against every one, against retraining.

    OMP_NUM_THREADS=1 python benchmarks/ekfac_columns.py --truth /tmp/truth --out /tmp/columns \
        --recipes a,b [--report]

EK-FAC builds its factors and refits its eigenvalues from each training row's
output-Hessian root ``R_n`` (``J_n^T R_n R_n^T J_n`` is the row's GGN term).
``curvature_options={"samples": None}`` takes every column of ``R_n`` (one backward
pass per output); ``samples="auto"`` (``curvature="ekfac"``'s default) does so up
to ``skdtda.model.AUTO_EXACT_COLUMNS`` outputs and beyond that takes one random
combination of the columns (unbiased, one pass). (Since 2026-12-08,
``curvature="auto"`` takes every column where those passes are cheap:
``skdtda.curvature.auto_options``; this script names both choices explicitly.) For each recipe of
``benchmarks/recipes.py`` (its 256-seed truth from ``recipes.py --truth``), the
recipe's ensemble is attributed by EK-FAC both ways at the rule's damping
(``damping="auto"``, ``calibration_budget=0``) and at 1e-4, 1e-3 and 1e-2, and scored
(LOO, mean-, variance- and Wasserstein-LDS; ``damping_transfer.score``); the fit's
seconds are kept. One JSON per recipe in ``--out``; ``--report`` prints the change
from every column at each damping.
"""

import json
import time
from pathlib import Path

import numpy as np
import recipes
from calibration_choice_study import study_main
from damping_transfer import score
from skdtda import InfluenceTransformer

DAMPINGS = ("rule", 1e-4, 1e-3, 1e-2)
SAMPLES = ("auto", None)


def run(name, truth_folder):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    ens, _ = recipes.fit_ensemble(r)
    out = {"recipe": name, "what": r.what, "rows": {}}
    for samples in SAMPLES:
        for damping in DAMPINGS:
            kwargs = (dict(damping="auto", calibration_budget=0) if damping == "rule"
                      else dict(damping=damping))
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, curvature="ekfac", measurement=r.measurement,
                                             curvature_options={"samples": samples},
                                             **kwargs).fit(r.X_train, r.y_train)
            seconds = time.perf_counter() - tic
            scores = score(influence, r, truth_loo, truth_lds)
            out["rows"][f"{samples}@{damping}"] = dict(scores, seconds=seconds,
                                                      damping=float(influence.damping_))
            print(f"{name} samples={samples} damping={damping}: "
                  + " ".join(f"{k} {v:.3f}" for k, v in scores.items())
                  + f" ({seconds:.2f} s)", flush=True)
    return out


def report(names, out):
    print("| recipe | damping | one combination (LOO / mean / variance) | every column | "
          "change | the transformer's fit, seconds (one, every) |")
    print("|---|---|---|---|---|---|")
    changes = []
    for name in names:
        rows = json.loads((Path(out) / f"{name}.columns.json").read_text())["rows"]
        for damping in DAMPINGS:
            one, every = rows[f"auto@{damping}"], rows[f"None@{damping}"]
            delta = [every[k] - one[k] for k in ("loo", "mean", "variance")]
            if damping == "rule":
                changes.extend(delta)
            print(f"| {name} | {damping} | "
                  + " / ".join(f"{one[k]:.2f}" for k in ("loo", "mean", "variance")) + " | "
                  + " / ".join(f"{every[k]:.2f}" for k in ("loo", "mean", "variance")) + " | "
                  + " / ".join(f"{d:+.2f}" for d in delta)
                  + f" | {one['seconds']:.1f}, {every['seconds']:.1f} |")
    changes = np.array(changes)
    print(f"\n- at the rule's damping: every column higher on {np.sum(changes > 0)} of "
          f"{len(changes)} cells, mean change {changes.mean():+.3f}")


def record(name, truth_folder, out):
    (Path(out) / f"{name}.columns.json").write_text(json.dumps(run(name, truth_folder),
                                                               indent=1))


def main(argv=None):
    study_main(__doc__, record, report, ".columns.json", argv)


if __name__ == "__main__":
    main()
