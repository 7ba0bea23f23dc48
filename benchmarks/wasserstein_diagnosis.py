"""Why Wasserstein-LDS falls short where mean-LDS does not: the sets' mean changes fold at zero.

    OMP_NUM_THREADS=1 python benchmarks/wasserstein_diagnosis.py --truth /tmp/truth \
        [--recipes a,b]

For each recipe of ``benchmarks/recipes.py`` (its 256-seed truth from ``recipes.py
--truth``), the recipe's ensemble is attributed with the defaults and its predicted
samples after each 30% removal are compared with the retrained ones, per query over the
sets (Spearman, averaged over the queries, as the LDS is):

- what the retrained W2 ranks like: the absolute change of the mean, ``|dmean|``, or of
  the standard deviation, ``|dstd|``;
- how well the prediction ranks the signed change of the mean (mean-LDS) and its
  absolute value: a ranking of ``|o + e_s|`` (``o`` the change common to the sets, the
  "offset", ``e_s`` each set's own) folds at zero where the offset is not large against
  the sets' spread, and two rankings that agree at ``rho`` on the signed values agree at
  about ``rho^2`` on the absolute ones at zero offset;
- the offsets themselves: their size against the sets' spread (median over queries),
  how often the predicted sign is the retrained one, their correlation over queries;
- Wasserstein-LDS again with the retrained offset put in the prediction's place (an
  oracle: how much of the shortfall the offset accounts for).
"""

import argparse
import warnings

import numpy as np
import torch

import recipes
from skdtda import InfluenceTransformer
from skdtda.evaluation import Distributions, distribution_change, lds, predict_distributions


def diagnose(name, truth_folder):
    r = recipes.recipe(name)
    _, truth = recipes.truth(r, truth_folder)
    ensemble = r.ensemble.fit(r.X_train, r.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        influence = InfluenceTransformer(ensemble, measurement=r.measurement).fit(
            r.X_train, r.y_train)
        predicted = predict_distributions(influence, r.X_query, r.y_query, remove=r.subsets)
        out = {}
        for label, samples in (("retrained", truth), ("predicted", predicted)):
            before, after = np.asarray(samples.before), np.asarray(samples.after)
            mean = distribution_change(samples, "mean")  # (n_sets, n_query)
            out[label] = {"w2": distribution_change(samples, "wasserstein"), "mean": mean,
                          "std": after.std(axis=1) - before.std(axis=0)[None],
                          "offset": mean.mean(axis=0), "spread": mean.std(axis=0)}
        ret, pred = out["retrained"], out["predicted"]
        shifted = Distributions(predicted.before, np.asarray(predicted.after)
                                + (ret["offset"] - pred["offset"])[None, None])
        oracle = lds(distribution_change(shifted, "wasserstein"), ret["w2"])
        with np.errstate(divide="ignore", invalid="ignore"):
            size = {k: float(np.nanmedian(np.abs(v["offset"]) / v["spread"]))
                    for k, v in out.items()}
        return {
            "w2_lds": lds(pred["w2"], ret["w2"]), "mean_lds": lds(pred["mean"], ret["mean"]),
            "truth_w2_vs_abs_mean": lds(np.abs(ret["mean"]), ret["w2"]),
            "truth_w2_vs_abs_std": lds(np.abs(ret["std"]), ret["w2"]),
            "abs_mean_lds": lds(np.abs(pred["mean"]), np.abs(ret["mean"])),
            "offset_size": size, "offset_sign_agreement": float(np.mean(
                np.sign(pred["offset"]) == np.sign(ret["offset"]))),
            "offset_correlation": float(np.corrcoef(pred["offset"], ret["offset"])[0, 1]),
            "w2_lds_oracle_offset": oracle}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True)
    parser.add_argument("--recipes", default="multiclass-sgd-wd,digits5-adam-margin")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| recipe | W2-LDS | mean-LDS | truth's W2 ranks like abs dmean / abs dstd | "
          "predicted abs dmean against retrained | offset / sets' spread (predicted, "
          "retrained) | offset: same sign, correlation | W2-LDS, retrained offset |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.recipes.split(","):
        d = diagnose(name, args.truth)
        print(f"| {name} | {d['w2_lds']:.2f} | {d['mean_lds']:.2f} | "
              f"{d['truth_w2_vs_abs_mean']:.2f} / {d['truth_w2_vs_abs_std']:.2f} | "
              f"{d['abs_mean_lds']:.2f} | {d['offset_size']['predicted']:.2f}, "
              f"{d['offset_size']['retrained']:.2f} | {d['offset_sign_agreement']:.0%}, "
              f"{d['offset_correlation']:+.2f} | {d['w2_lds_oracle_offset']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
