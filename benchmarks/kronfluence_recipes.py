"""kronfluence's EK-FAC on the recipes of ``benchmarks/recipes.py``, scored against their truth.

    OMP_NUM_THREADS=1 python benchmarks/kronfluence_recipes.py --truth /tmp/truth \
        --out /tmp/study --kronfluence-python /tmp/kf-venv/bin/python [--recipes a,b]

For each recipe, its ensemble is fitted as the other studies fit it (same
seeds, same weights), each member's module is handed to kronfluence
(``_kronfluence_worker.py``, run by the Python of a venv that has kronfluence,
skdtda installed with ``--no-deps`` and scikit-learn, skorch and SciPy, so that
the pickled modules load) and kronfluence's EK-FAC pairwise scores ``s_k`` give
each seed's predicted change ``s_k / N`` of the recipe's measurement (loss or
margin) when row ``k`` is removed, looped over the members. Two dampings: 1e-3
and kronfluence's own rule (0.1 x the mean eigenvalue). The scores (LOO
correlation, mean-, variance- and Wasserstein-LDS against the 256-seed truth)
go to ``--out/<recipe>.kronfluence.json``.
"""

import argparse
import json
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import recipes
from _architectures import MODELS
from damping_transfer import ceilings
from skdtda.evaluation import Distributions, lds, loo_correlation, removal_masks

DAMPINGS = ("1e-3", "heuristic")


def _scores(before, delta, r, truth_loo, truth_lds):
    def shifted(sets):
        masks = removal_masks(sets, len(r.X_train)).astype(np.float64)
        return Distributions(before, before[None] + np.einsum("sqt,mt->msq", delta, masks))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*constant changes.*")
        pred_loo, pred_lds = shifted(r.loo), shifted(r.subsets)
        return {"loo": loo_correlation(pred_loo, truth_loo),
                "mean": lds(pred_lds, truth_lds, "mean"),
                "variance": lds(pred_lds, truth_lds, "variance"),
                "wasserstein": lds(pred_lds, truth_lds, "wasserstein")}


def kronfluence_delta(ens, r, damping, python):
    """Per-seed changes (n_seeds, n_query, n_train) from kronfluence, and its seconds."""
    modules = [m.module_ for m in ens._torch_members()]
    dtype = next(modules[0].parameters()).dtype
    regression = not hasattr(ens, "classes_")
    if regression:
        y_tr, y_q = (np.asarray(v, dtype=np.float64).reshape(len(v), -1)
                     for v in (r.y_train, r.y_query))
    else:
        y_tr, y_q = (np.searchsorted(ens.classes_, v) for v in (r.y_train, r.y_query))
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    with tempfile.TemporaryDirectory(prefix="kf_recipe_") as folder:
        np.savez(os.path.join(folder, "data.npz"), X_train=r.X_train.astype(np_dtype),
                 y_train=y_tr.astype(np_dtype) if regression else y_tr,
                 X_query=r.X_query.astype(np_dtype),
                 y_query=y_q.astype(np_dtype) if regression else y_q)
        meta = {"task": "regression" if regression else "classification",
                "measurement": r.measurement}
        architecture = type(modules[0]).__name__
        if architecture in MODELS:  # rebuilt from its class (kronfluence wraps its layers)
            torch.save([m.state_dict() for m in modules], os.path.join(folder, "members.pt"))
            meta.update(model=architecture, kwargs={})
        else:
            torch.save(modules, os.path.join(folder, "modules.pt"))
        with open(os.path.join(folder, "meta.json"), "w") as f:
            json.dump(meta, f)
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "_kronfluence_worker.py")
        proc = subprocess.run([python, worker, folder, "--damping", damping, "--batch", "300"],
                              capture_output=True, text=True,
                              env=dict(os.environ, OMP_NUM_THREADS="1"), check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kronfluence worker failed:\n{proc.stderr[-3000:]}")
        scores = np.load(os.path.join(folder, "kronfluence_scores.npy")).astype(np.float64)
        with open(os.path.join(folder, "kronfluence.json")) as f:
            seconds = json.load(f)["seconds"]
    # s_k = grad m^T (F + damping)^{-1} grad L_k with a summed training loss: removing
    # row k changes the measurement by +s_k / N, whatever the measurement
    return scores / len(r.X_train), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--kronfluence-python", required=True)
    parser.add_argument("--recipes", default=",".join(recipes.CHOICE))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.recipes.split(","):
        path = out / f"{name}.kronfluence.json"
        if path.exists():
            continue
        r = recipes.recipe(name)
        truth_loo, truth_lds = recipes.truth(r, args.truth)
        ens, _ = recipes.fit_ensemble(r)
        before = ens.measure(r.X_query, r.y_query, measurement=r.measurement)
        result = {"recipe": name, "ceiling": ceilings(truth_loo, truth_lds), "dampings": {}}
        for damping in DAMPINGS:
            tic = time.perf_counter()
            delta, seconds = kronfluence_delta(ens, r, damping, args.kronfluence_python)
            result["dampings"][damping] = {
                **_scores(before, delta, r, truth_loo, truth_lds), "seconds": seconds,
                "wall": time.perf_counter() - tic}
            print(name, damping, result["dampings"][damping], flush=True)
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
