"""EK-FAC with a diagonal input factor on a wide first layer, against the full factor.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/wide_inputs.py --rows 4000 --cols 5000

The data and ensemble of ``bench_sparse.py`` (CSR rows, density 0.5%, an MLP
with one hidden layer of 32): EK-FAC with every input factor full
(``diagonal_input_above=None``) and with the first layer's diagonal
(``diagonal_input_above=64``: the 33-input head stays full). Printed: each
variant's influence fit and scoring seconds, the mean Spearman correlation of
their score rows (per seed and query), and each variant's mean-LDS against
retraining on ``--sets`` random removal sets (30% of the rows removed).
"""

import argparse
import sys
import time

from bench_sparse import _data  # benchmarks/ is the script's folder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--cols", type=int, default=5000)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--sets", type=int, default=16)
    parser.add_argument("--retrain-seeds", type=int, default=8)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from scipy import stats
    from skorch import NeuralNetClassifier

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    from skdtda import evaluation as ev
    from skdtda.evaluation import lds

    torch.set_num_threads(1)
    X, y, Xq, yq = _data(args.rows, args.cols, args.density, args.queries)
    from skdtda.nets import MLP

    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=(32,), criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05, batch_size=128,
        max_epochs=3, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=args.seeds, random_state=0).fit(X, y)
    remove = ev.random_subsets(args.rows, args.sets, keep_fraction=0.7, random_state=0)
    tic = time.perf_counter()
    actual = ev.retrain_distributions(ens, X, y, Xq, yq, remove=remove,
                                      n_seeds=args.retrain_seeds, random_state=0)
    print(f"retraining {args.sets} sets x {args.retrain_seeds} seeds: "
          f"{time.perf_counter() - tic:.1f} s")
    scores = {}
    for name, above in (("full", None), ("diagonal", 64)):
        influence = InfluenceTransformer(ens, curvature="ekfac",
                                         curvature_options={"diagonal_input_above": above})
        tic = time.perf_counter()
        influence.fit(X, y)
        fit_s = time.perf_counter() - tic
        tic = time.perf_counter()
        scores[name] = influence.influence_samples(Xq, yq)
        score_s = time.perf_counter() - tic
        predicted = ev.predict_distributions(influence, Xq, yq, remove=remove)
        print(f"{name:9s} fit {fit_s:7.1f} s  scores {score_s:6.1f} s  "
              f"mean-LDS {lds(predicted, actual):.3f}  "
              f"diagonal layers {sorted(influence.curvatures_[0].diagonal_inputs)}")
        sys.stdout.flush()
    a, b = scores["diagonal"], scores["full"]
    rho = [stats.spearmanr(a[s, q], b[s, q])[0]
           for s in range(a.shape[0]) for q in range(a.shape[1])]
    print(f"diagonal vs full: Spearman per seed and query mean {np.mean(rho):.3f}, "
          f"min {np.min(rho):.3f}; Pearson of all scores "
          f"{np.corrcoef(a.ravel(), b.ravel())[0, 1]:.3f}")


if __name__ == "__main__":
    main()
