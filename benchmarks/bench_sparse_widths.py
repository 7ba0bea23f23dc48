"""How scoring against a wide sparse first layer grows with its width, side by side
with the per-chunk copy of the solved queries that it used to make.

Run with one intra-op thread, as all figures in docs/benchmarks.md are::

    OMP_NUM_THREADS=1 python benchmarks/bench_sparse_widths.py --cols 10000,20000,40000
    OMP_NUM_THREADS=1 python benchmarks/bench_sparse_widths.py --cols 10000 --profile

The data and ensemble of ``bench_sparse.py`` (CSR rows, density 0.5%, an MLP
with one hidden layer of 32, the batched path; here 4,000 rows and 2 seeds by
default), ``InfluenceTransformer`` with its defaults (EK-FAC; above 8,192
inputs the first layer's input factor is diagonal; no store of the training
gradients, which would not fit), ``--queries`` query rows scored against every
training row. For each width, two variants, each in a fresh subprocess (its own
peak RSS), on the same fitted pipeline:

- ``once``: the library as it is; the solved queries' input-major copy that the
  sparse product reads is made once per query chunk;
- ``per-chunk``: that copy made again for every chunk of training rows (what
  scoring did before, restored by replacing ``_scoring._input_major`` with the
  transposed view that ``SparsePatches.rotated`` then copies).

Printed per width and variant: scoring seconds, peak RSS before and after
scoring, and the largest difference between the variants' scores (0: the same
products in the same order); with ``--profile``, the top entries of a cProfile
of each scoring.
"""

import argparse
import json
import time

from _memory import in_subprocess, peak_rss_mib  # benchmarks/ is the script's folder
from bench_sparse import _data


def _run(args, cols, variant, queue):
    import cProfile
    import io
    import pstats

    import numpy as np
    import torch
    from skorch import NeuralNetClassifier

    from skdtda import InfluenceTransformer, SeedEnsembleClassifier
    from skdtda.influence import _scoring
    from skdtda.nets import MLP

    torch.set_num_threads(1)
    if variant == "per-chunk":
        def transposed_view(s, out, patches, solved, i):  # rotated copies it, chunk by chunk
            return s.reshape(len(s) * out, -1).T

        _scoring._input_major = transposed_view
    X, y, Xq, yq = _data(args.rows, cols, args.density, args.queries)
    net = NeuralNetClassifier(
        MLP, module__hidden_layer_sizes=(32,), criterion=torch.nn.CrossEntropyLoss,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05, batch_size=128,
        max_epochs=args.epochs, train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=args.seeds, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, precompute=False).fit(X, y)
    before_mib = peak_rss_mib()
    profile = cProfile.Profile() if args.profile else None
    tic = time.perf_counter()
    if profile is not None:
        profile.enable()
    scores = influence.influence_samples(Xq, yq)
    if profile is not None:
        profile.disable()
    seconds = time.perf_counter() - tic
    np.save(args.scores_to.format(cols=cols, variant=variant), scores)
    top = None
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
        top = out.getvalue()
    queue.put(dict(seconds=seconds, peak_before_mib=before_mib, peak_mib=peak_rss_mib(),
                   diagonal_inputs=sorted(influence.curvatures_[0].diagonal_inputs),
                   profile=top))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--cols", default="10000,20000,40000",
                        help="comma-separated widths")
    parser.add_argument("--density", type=float, default=0.005)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variants", default="once,per-chunk")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--scores-to", default="/tmp/bench_sparse_widths_{cols}_{variant}.npy",
                        help="where each run saves its scores ({cols}, {variant} filled in)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import numpy as np

    variants = args.variants.split(",")
    results = {}
    for cols in (int(c) for c in args.cols.split(",")):
        for variant in variants:
            r = in_subprocess(_run, args, cols, variant, label=f" ({cols}, {variant})")
            results[f"{cols} {variant}"] = r
            print(f"{cols} columns, {variant}: scores {r['seconds']:.1f} s, peak RSS "
                  f"{r['peak_before_mib']:.0f} MiB before scoring, {r['peak_mib']:.0f} after; "
                  f"diagonal input factors {r['diagonal_inputs']}", flush=True)
            if r["profile"]:
                print(r["profile"], flush=True)
        if len(variants) == 2:
            a, b = (np.load(args.scores_to.format(cols=cols, variant=v)) for v in variants)
            print(f"{cols} columns: max |{variants[0]} - {variants[1]}| = "
                  f"{float(np.abs(a - b).max()):.3g} (scores up to {float(np.abs(b).max()):.3g})",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)
    return results


if __name__ == "__main__":
    main()
