"""Sparse (CSR) input end to end, against its dense copy, in one run.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_sparse.py
    OMP_NUM_THREADS=1 python benchmarks/bench_sparse.py --rows 2000 --cols 1000  # quick

A seed ensemble of small MLP classifiers (one hidden layer of 32, 4 seeds, the
batched path) trains on a random CSR matrix (``--rows`` x ``--cols``,
``--density`` nonzeros, labels from a sparse linear teacher), and an
``InfluenceTransformer`` with its default curvature scores ``--queries`` query
rows against every training row. The same pipeline runs twice, each in a fresh
subprocess so that its peak resident memory is its own: once on the CSR
matrix, once on its dense float32 copy. Printed side by side: seconds (fit,
influence fit, transform), peak RSS, and how well the two score matrices agree.

Targets (issue 26) at 20k x 5k, density 0.5%: scores correlate above 0.999,
and the sparse path's peak is below the dense path's by at least half the
dense matrix (200 MB).
"""

import argparse
import json
import sys
import time

from _memory import in_subprocess, peak_rss_mib  # benchmarks/ is the script's folder


def _data(rows, cols, density, n_queries, n_classes=4):
    import numpy as np
    from scipy import sparse

    rng = np.random.default_rng(0)
    X = sparse.random(rows + n_queries, cols, density=density, format="csr",
                      random_state=rng, dtype=np.float32)
    X.data = rng.exponential(size=X.nnz).astype(np.float32)  # tf-idf-like weights
    teacher = rng.normal(size=(cols, n_classes))
    y = np.asarray(X @ teacher).argmax(axis=1)
    return X[:rows], y[:rows], X[rows:], y[rows:]


def _run(args, form, queue):
    import numpy as np
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    from skdtda.nets import MLP

    torch.set_num_threads(1)
    X, y, Xq, yq = _data(args.rows, args.cols, args.density, args.queries)
    if form == "dense":
        X, Xq = X.toarray(), Xq.toarray()
    base_mib = peak_rss_mib()
    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=(32,), criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05, batch_size=128,
        max_epochs=args.epochs, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=args.seeds, random_state=0)
    times = {}
    tic = time.perf_counter()
    ens.fit(X, y)
    times["ensemble fit"] = time.perf_counter() - tic
    options = (None if args.diagonal_input_above == "default"
               else {"diagonal_input_above": None if args.diagonal_input_above == "none"
                     else int(args.diagonal_input_above)})
    influence = InfluenceTransformer(ens, curvature=args.curvature, curvature_options=options)
    tic = time.perf_counter()
    influence.fit(X, y)
    times["influence fit"] = time.perf_counter() - tic
    tic = time.perf_counter()
    scores = influence.influence_samples(Xq, yq)
    times["scores"] = time.perf_counter() - tic
    np.save(args.scores_to.format(form=form), scores)
    queue.put(dict(times=times, total=sum(times.values()), peak_mib=peak_rss_mib(),
                   data_mib=base_mib, curvature=str(influence.curvature_),
                   diagonal_inputs=sorted(getattr(influence.curvatures_[0], "diagonal_inputs",
                                                  {})),
                   vectorized=bool(ens.vectorized_), accuracy=float(ens.score(Xq, yq))))

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--cols", type=int, default=5_000)
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--curvature", default="auto")
    parser.add_argument("--diagonal-input-above", default="default",
                        help="EK-FAC's curvature option: an int, 'none' (every input factor "
                             "full) or 'default'")
    parser.add_argument("--forms", default="sparse,dense",
                        help="which paths to run; 'sparse' alone where the dense copy "
                             "would not fit (a 50k vocabulary)")
    parser.add_argument("--scores-to", default="/tmp/bench_sparse_{form}.npy",
                        help="where each path saves its scores ({form} is filled in)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import numpy as np
    from scipy import stats

    forms = args.forms.split(",")
    results = {form: in_subprocess(_run, args, form, label=f" ({form})") for form in forms}
    dense_matrix_mib = args.rows * args.cols * 4 / 2**20
    if forms != ["sparse", "dense"]:
        for form, r in results.items():
            print(f"{form}: {args.rows} x {args.cols}, density {args.density}, {args.seeds} "
                  f"seeds, {args.queries} queries: {r}")
        return results, None
    s, d = (np.load(args.scores_to.format(form=f)) for f in ("sparse", "dense"))
    agreement = dict(
        pearson=float(np.corrcoef(s.ravel(), d.ravel())[0, 1]),
        spearman=float(stats.spearmanr(s.ravel(), d.ravel())[0]),
        max_relative=float(np.abs(s - d).max() / np.abs(d).max()))
    print(f"{args.rows} x {args.cols} CSR, density {args.density}, {args.seeds} seeds, "
          f"{args.queries} queries; dense matrix {dense_matrix_mib:.0f} MiB")
    print(f"  {'':14s} {'sparse':>10s} {'dense':>10s}")
    for phase in results["sparse"]["times"]:
        print(f"  {phase:14s} {results['sparse']['times'][phase]:9.1f}s "
              f"{results['dense']['times'][phase]:9.1f}s")
    print(f"  {'total':14s} {results['sparse']['total']:9.1f}s {results['dense']['total']:9.1f}s")
    print(f"  {'peak RSS':14s} {results['sparse']['peak_mib']:7.0f}MiB "
          f"{results['dense']['peak_mib']:7.0f}MiB")
    print(f"  {'after data':14s} {results['sparse']['data_mib']:7.0f}MiB "
          f"{results['dense']['data_mib']:7.0f}MiB")
    print(f"  curvature {results['sparse']['curvature']} / {results['dense']['curvature']}, "
          f"vectorized {results['sparse']['vectorized']} / {results['dense']['vectorized']}, "
          f"diagonal input factors {results['sparse']['diagonal_inputs']}")
    print(f"  scores: Pearson {agreement['pearson']:.6f}, Spearman {agreement['spearman']:.6f}, "
          f"max |sparse - dense| / max |dense| {agreement['max_relative']:.2e}")
    print(f"  peak saved: {results['dense']['peak_mib'] - results['sparse']['peak_mib']:.0f} MiB "
          f"(target: at least {dense_matrix_mib / 2:.0f})")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results, agreement=agreement), f, indent=2)
    return results, agreement


if __name__ == "__main__":
    main()
