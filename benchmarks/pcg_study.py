"""EK-FAC refined by a few preconditioned CG steps on the exact GGN (``curvature="pcg"``).

    OMP_NUM_THREADS=1 python benchmarks/pcg_study.py agreement --out /tmp/pcg/agreement.json
    OMP_NUM_THREADS=1 python benchmarks/pcg_study.py fidelity --truth /tmp/truth \
        --out /tmp/pcg/fidelity.json

``agreement``: for each model (the digits CNN of the ``digits-cnn`` recipe, a
``DigitsTransformer`` trained here on its own split and seeds, the MLP of
``digits-sgd``), a few seeds are attributed at each damping with the exact GGN
over the layers EK-FAC attributes (the reference: what PCG converges to), with
EK-FAC, with ``"pcg"`` at ``k`` steps, and with plain CG (``"cg"`` over the same
layers, no preconditioner) at ``k`` steps. Agreement: Spearman over the training
rows of each seed's scores for each query, against the reference's, averaged
over seeds and queries. Time: fit + ``influence_samples`` of the recipe's 40
queries, each method in a fresh transformer, one after the other in one process.
For the transformer, EK-FAC and PCG are also compared with the exact GGN over
*all* parameters (the figure of docs/benchmarks.md, "What holding parameters
fixed costs").

``fidelity``: the ``digits-cnn`` recipe (16 seeds, a choice recipe) scored against
its 256-seed retrained truth (LOO correlation, mean-, variance- and
Wasserstein-LDS; ``damping_transfer.score``) for EK-FAC, the exact GGN and PCG at
the same dampings. ``--recipe`` takes another recipe of ``recipes.CHOICE``; a held-out
one only with ``--held-out-once`` (scored once, against a prediction written down before).
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning

import recipes
from _architectures import DigitsTransformer
from damping_transfer import score
from skdtda import InfluenceTransformer, SeedEnsembleClassifier


def spearman_rows(a, b):
    """Spearman over the last axis of each pair of rows, averaged: ``a, b`` are
    ``(n_seeds, n_query, n_train)``."""
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    num = (ra * rb).sum(-1)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    return float(np.mean(num / np.where(den > 0, den, np.inf)))


def _model(name, n_seeds):
    """``(ensemble fitted, X_train, y_train, X_query, y_query, what)``."""
    if name == "transformer":
        X, y = recipes._digits(np.float32)
        X_train, y_train, X_query, y_query, _, _ = recipes._split(X, y, seed=101)
        net = recipes._classifier(DigitsTransformer, 30, optimizer=torch.optim.Adam, lr=3e-3)
        ens = SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=101)
        what = "DigitsTransformer, Adam lr 3e-3, 30 epochs, own split and seeds"
    else:
        r = recipes.recipe({"cnn": "digits-cnn", "mlp": "digits-sgd"}[name])
        X_train, y_train, X_query, y_query = r.X_train, r.y_train, r.X_query, r.y_query
        ens = r.ensemble.set_params(n_seeds=n_seeds)
        what = f"{r.name}: {r.what}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        ens.fit(X_train, y_train)
    return ens, X_train, y_train, X_query, y_query, what


def _run(ens, X, y, Xq, yq, damping, curvature, options=None, modules=None):
    """``(samples (S, nq, nt), seconds of fit + influence_samples, transformer)``."""
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        influence = InfluenceTransformer(ens, curvature=curvature, damping=damping,
                                         curvature_options=options, modules=modules,
                                         calibration_budget=0).fit(X, y)
        samples = influence.influence_samples(Xq, yq)
    return samples, time.perf_counter() - tic, influence


def agreement(models, n_seeds, dampings, steps):
    out = {}
    for name in models:
        ens, X, y, Xq, yq, what = _model(name, n_seeds)
        entry = {"what": what, "dampings": {}}
        for damping in dampings:
            rows = {}
            ekfac, t_ekfac, inf = _run(ens, X, y, Xq, yq, damping, "ekfac")
            layers = inf.attributed_layers_
            ref, t_ref, ref_inf = _run(ens, X, y, Xq, yq, damping, "ggn", modules=layers)
            assert ref_inf.n_params_attributed_ == inf.n_params_attributed_
            form = type(ref_inf.curvatures_[0]).__name__
            entry.update(n_params=sum(p.numel() for p in ens.estimators_[0].module_.parameters()),
                         n_attributed=inf.n_params_attributed_, ggn_form=form)
            rows["ggn"] = {"spearman": 1.0, "seconds": t_ref}
            rows["ekfac"] = {"spearman": spearman_rows(ekfac, ref), "seconds": t_ekfac}
            if name == "transformer":
                full, t_full, _ = _run(ens, X, y, Xq, yq, damping, "ggn")
                rows["ggn (all parameters)"] = {"spearman": spearman_rows(full, ref),
                                                "seconds": t_full}
                rows["ekfac"]["vs all parameters"] = spearman_rows(ekfac, full)
            for k in steps:
                pcg, t_pcg, _ = _run(ens, X, y, Xq, yq, damping, "pcg", {"maxiter": k})
                rows[f"pcg {k}"] = {"spearman": spearman_rows(pcg, ref), "seconds": t_pcg}
                if name == "transformer":
                    rows[f"pcg {k}"]["vs all parameters"] = spearman_rows(pcg, full)
                cg, t_cg, _ = _run(ens, X, y, Xq, yq, damping, "cg",
                                   {"maxiter": k, "tol": 0.0}, modules=layers)
                rows[f"cg {k}"] = {"spearman": spearman_rows(cg, ref), "seconds": t_cg}
            for row in rows.values():
                row["vs ekfac"] = row["seconds"] / t_ekfac
                row["vs ggn"] = row["seconds"] / t_ref
            entry["dampings"][repr(damping)] = rows
            print(f"{name} damping {damping:g} ({form}):", flush=True)
            for key, row in rows.items():
                print(f"  {key:22s} spearman {row['spearman']:.3f}  {row['seconds']:7.2f} s  "
                      f"{row['vs ekfac']:6.1f}x ekfac  {row['vs ggn']:5.2f}x ggn"
                      + (f"  (vs all parameters {row['vs all parameters']:.3f})"
                         if "vs all parameters" in row else ""), flush=True)
        out[name] = entry
    return out


def fidelity(truth_folder, name, dampings, steps):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    ens, _ = recipes.fit_ensemble(r)
    out = {"recipe": name, "what": r.what, "rows": {}}
    methods = [("ekfac", None), ("ggn", None)] + [("pcg", {"maxiter": k}) for k in steps]
    for damping in dampings:
        for curvature, options in methods:
            tic = time.perf_counter()
            influence = InfluenceTransformer(ens, curvature=curvature, damping=damping,
                                             curvature_options=options,
                                             measurement=r.measurement,
                                             calibration_budget=0).fit(r.X_train, r.y_train)
            seconds = time.perf_counter() - tic
            scores = score(influence, r, truth_loo, truth_lds)
            label = curvature + (f" {options['maxiter']}" if options else "")
            key = f"{label} @ {damping}"
            out["rows"][key] = {"damping": influence.damping_, "fit_seconds": seconds,
                                **scores}
            print(f"{key:22s} (damping {influence.damping_:.3g}) "
                  + " ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("agreement", "fidelity"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--models", default="cnn,transformer,mlp")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--dampings", default="1e-3,1e-2")
    parser.add_argument("--steps", default="1,2,5,10,20")
    parser.add_argument("--truth", default=None)
    parser.add_argument("--recipe", default="digits-cnn")
    parser.add_argument("--held-out-once", action="store_true",
                        help="score a held-out recipe (once, against a prediction written "
                             "down before; docs/benchmarks.md says when)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dampings = [d if d == "auto" else float(d) for d in args.dampings.split(",")]
    steps = [int(k) for k in args.steps.split(",")]
    if args.part == "agreement":
        result = agreement(args.models.split(","), args.seeds, dampings, steps)
    else:
        if args.recipe not in recipes.CHOICE and not args.held_out_once:
            raise SystemExit(f"{args.recipe} is held out: score it once, with settings fixed "
                             "beforehand (docs/benchmarks.md)")
        result = fidelity(args.truth, args.recipe, dampings, steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
