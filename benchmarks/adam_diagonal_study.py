"""Adam's training time per parameter as a diagonal damping, against the scalar rule.

    OMP_NUM_THREADS=1 python benchmarks/adam_diagonal_study.py --truth /tmp/truth \
        --recipes digits-adam-long,friedman-adam-long,breast-adam-long [--out f.json]

``damping="auto"`` reads Adam's training time as ``tau = T * median_i lr /
(sqrt(v_hat_i) + eps)``: the median over parameters of each one's rate. The
argument behind ``1 / tau`` (skdtda/influence/_damping.py) holds per parameter
for a preconditioned run: T steps of ``lr P`` with ``P = diag(1 / (sqrt(v_hat) +
eps))`` respond as ``(H + P^{-1} / (lr T))^{-1}`` to first order, a *diagonal*
damping ``d_i = (sqrt(v_hat_i) + eps) / (lr T)`` whose median is today's scalar.
This study scores that diagonal on the exact GGN (dense form; each member's
``(H + diag(c d))`` factored afresh) against the scalar rule, the mean of ``d``,
and the fixed grid, on recipes of ``benchmarks/recipes.py`` trained with Adam
(skorch's Adam/AdamW or scikit-learn's ``solver="adam"``), scored against their
256-seed truth (LOO / mean- / variance- / Wasserstein-LDS, one transformer fitted
for the mean). Measured in docs/benchmarks.md ("Adam's damping per parameter").
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

import recipes
from damping_transfer import TARGET_GRID, score
from skdtda import InfluenceTransformer
from skdtda.curvature import EigenCurvature

MULTIPLES = (0.3, 1, 3, 10, 30)


def _per_name(named, member):
    return torch.cat([named[n].reshape(-1) for n in member.names])


def adam_damping(estimator, member):
    """``d_i = (sqrt(v_hat_i) + eps) / (lr T)`` of a fitted member, in ``member.names``
    order (a skorch net with Adam/AdamW, or scikit-learn's MLP with ``solver="adam"``)."""
    if hasattr(estimator, "_optimizer"):  # scikit-learn: coefs_ then intercepts_
        opt, n_layers = estimator._optimizer, len(estimator.coefs_)
        scale = 1 / (opt.learning_rate_init * opt.t)
        named = {}
        for i in range(n_layers):
            for name, v in ((f"layers.{i}.weight", opt.vs[i].T),
                            (f"layers.{i}.bias", opt.vs[n_layers + i])):
                v_hat = torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float64) / (
                    1 - opt.beta_2 ** opt.t)
                named[name] = (v_hat.sqrt() + opt.epsilon) * scale
        return _per_name(named, member)
    opt = estimator.optimizer_
    group = opt.param_groups[0]
    named = {}
    for name, p in estimator.module_.named_parameters():
        state = opt.state[p]
        step = float(state["step"])
        v_hat = state["exp_avg_sq"].double() / (1 - group["betas"][1] ** step)
        named[name] = (v_hat.sqrt() + group["eps"]) / (group["lr"] * step)
    return _per_name(named, member)


def study(name, truth_folder):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        ens = r.ensemble.fit(r.X_train, r.y_train)
    influence = InfluenceTransformer(ens, curvature="ggn", curvature_options={"form": "dense"},
                                     damping="auto", measurement=r.measurement,
                                     calibration_budget=0).fit(r.X_train, r.y_train)
    auto = influence.damping_
    fitted = list(influence.curvatures_)
    matrices = [c.matrix() for c in fitted]
    diagonals = [adam_damping(ens.estimators_[i], c.member)
                 for i, c in zip(influence.members_, fitted)]
    every = torch.cat(diagonals)
    median = float(every.median())

    def scored(per_member):
        influence.curvatures_ = [EigenCurvature(h + torch.diag(d), 1e-12, c.terms, c.member)
                                 for h, d, c in zip(matrices, per_member, fitted)]
        return score(influence, r, truth_loo, truth_lds)

    def scalar(value):
        return scored([torch.full_like(d, value) for d in diagonals])

    rows = {f"auto (scalar, median rule) [{auto:.3g}]": scalar(auto),
            f"mean of d [{float(every.mean()):.3g}]": scalar(float(every.mean()))}
    rows.update({f"fixed {value:g}": scalar(value) for value in TARGET_GRID})
    rows[f"diagonal at auto's scale (x {auto / median:.3g})"] = scored(
        [d * (auto / median) for d in diagonals])
    rows.update({f"diagonal x {c:g}": scored([d * c for d in diagonals]) for c in MULTIPLES})
    print(f"{name}: median d {median:.3g}, quantiles 10/90% {float(every.quantile(0.1)):.3g} / "
          f"{float(every.quantile(0.9)):.3g}", flush=True)
    for label, scores in rows.items():
        print(f"    {label:44s} " + " / ".join(f"{scores[k]:.2f}" for k in scores), flush=True)
    return {"recipe": name, "auto": auto, "median_d": median, "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--recipes", default="digits-adam-long,friedman-adam-long,"
                                             "breast-adam-long")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [study(name, args.truth) for name in args.recipes.split(",")]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
