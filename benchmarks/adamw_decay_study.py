"""AdamW's decoupled weight decay: the uniform L2 reading against its fixed point.

    OMP_NUM_THREADS=1 python benchmarks/adamw_decay_study.py --truth /tmp/truth \
        [--recipes regression-adamw] [--out /tmp/adamw.json] [--no-grid]

Two readings of a net's optimizer weight decay ``wd``. Uniform: the L2 term
``wd |theta|^2 / 2`` of the training objective, as skdtda reads SGD's and Adam's
(skdtda.model.optimizer_weight_decay), and read AdamW's until 2026-12-07: the
curvature gains ``wd I``, and under ``retraining="same_epochs"`` a removed row takes
its share of the decay steps along. Fixed point (skdtda.model.decoupled_decay, the
default for AdamW since 2026-12-07): AdamW steps
``theta <- theta (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)``; its decay is not
preconditioned, its gradient step is, so written as a preconditioned step on one
objective the decay is the gradient of ``sum_i wd (sqrt(v_hat_i) + eps) theta_i^2 / 2``,
and at AdamW's fixed point the loss gradient is ``-wd (sqrt(v_hat) + eps) theta``,
not ``-wd theta``.

For each recipe of ``benchmarks/recipes.py`` trained with AdamW (its 256-seed truth
from ``recipes.py --truth``) this study attributes the ensemble under both readings,
each given to the member nets explicitly (an :class:`~skdtda.model.L2Penalty` of the
coefficients, not normalised with the rows, and the optimizer's ``weight_decay`` set
to 0), so the result does not depend on the library's default. It prints, per
reading, the members' distance from stationarity under the objective it implies
(``|grad L|``, ``|D theta|`` and ``|grad L + D theta|``, averaged over members:
minibatch training ends where the mean loss gradient is the noise of its last
steps), and LOO / mean- / variance- / Wasserstein-LDS at ``damping="auto"`` and
over the fixed grid of ``damping_transfer.py``. Measured in docs/benchmarks.md
("Third round").
"""

import argparse
import copy
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import is_regressor

import recipes
from damping_transfer import GRID, redamp, score
from skdtda import InfluenceTransformer
from skdtda.model import L2Penalty, decoupled_decay, functional_member


def uniform_penalty(net):
    """``{parameter name: wd}``: the decay read as ``wd |theta|^2 / 2``."""
    wd = float(net.optimizer_.param_groups[0]["weight_decay"])
    return {name: wd for name, _ in net.module_.named_parameters()}


def read_as(ens, penalty):
    """A copy of the fitted ensemble whose members carry ``penalty(net)`` as their L2
    term (not normalised with the rows), their optimizer's own decay set to 0."""
    ens = copy.deepcopy(ens)
    for net in ens.estimators_:
        net.l2_penalty_ = L2Penalty(penalty(net), normalised=False)
        for group in net.optimizer_.param_groups:
            group["weight_decay"] = 0.0
    return ens


def stationarity(ens, r):
    """``(|grad L|, |D theta|, |grad L + D theta|)`` averaged over members: the mean
    training-loss gradient, the gradient of the L2 term each reading implies, and
    the objective's gradient (zero at a stationary point)."""
    out = []
    for net in ens.estimators_:
        member = functional_member(net, r.measurement,
                                   "regressor" if is_regressor(r.ensemble) else "classifier")
        (loss_grad,) = member.mean_grads(r.X_train, r.y_train)
        decay = member.fixed_diagonal() * member.theta.double()
        out.append([float(loss_grad.norm()), float(decay.norm()),
                    float((loss_grad + decay).norm())])
    return [float(v) for v in np.mean(out, axis=0)]


def study(name, truth_folder, grid=True):
    r = recipes.recipe(name)
    truth_loo, truth_lds = recipes.truth(r, truth_folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        fitted = r.ensemble.fit(r.X_train, r.y_train)
    result = {"recipe": name, "readings": {}}
    for reading, ens in (("uniform wd", read_as(fitted, uniform_penalty)),
                         ("fixed point", read_as(fitted, decoupled_decay))):
        entry = {"stationarity": stationarity(ens, r)}
        kwargs = dict(measurement=r.measurement, calibration_budget=0)
        auto = InfluenceTransformer(ens, damping="auto", **kwargs).fit(r.X_train, r.y_train)
        spread = InfluenceTransformer(ens, damping="auto", statistic="variance",
                                      **kwargs).fit(r.X_train, r.y_train)
        entry.update(curvature=auto.curvature_, auto_damping=auto.damping_,
                     auto=score(auto, r, truth_loo, truth_lds, spread), grid={})
        del spread
        for damping in GRID if grid else ():
            entry["grid"][repr(damping)] = score(redamp(auto, damping), r, truth_loo, truth_lds)
        result["readings"][reading] = entry
        best = {k: max((g[k] for g in entry["grid"].values()), default=np.nan)
                for k in entry["auto"]}
        print(f"{name}, {reading}: |grad L|, |D theta|, |grad L + D theta| = "
              + ", ".join(f"{v:.3g}" for v in entry["stationarity"])
              + f"; auto [{entry['auto_damping']:.3g}] "
              + " / ".join(f"{entry['auto'][k]:.2f}" for k in entry["auto"])
              + "; best fixed " + " / ".join(f"{best[k]:.2f}" for k in best), flush=True)
        for damping, scores in entry["grid"].items():
            print(f"    {float(damping):8.2g}  "
                  + " / ".join(f"{scores[k]:.2f}" for k in scores), flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--recipes", default="regression-adamw")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-grid", action="store_true",
                        help="score damping='auto' only (no fixed grid)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [study(name, args.truth, grid=not args.no_grid)
               for name in args.recipes.split(",")]
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
