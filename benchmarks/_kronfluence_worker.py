"""kronfluence's EK-FAC pairwise scores, looped over the members of a seed ensemble.

Run by ``benchmarks/bench_influence.py`` with the Python of a separate venv that
has kronfluence (never a dependency of skdtda)::

    /tmp/kf-venv/bin/python benchmarks/_kronfluence_worker.py FOLDER --damping 1e-3

``FOLDER`` holds what the main script saved: ``data.npz`` (train and query rows,
targets as class indices), ``members.pt`` (one ``state_dict`` per seed of an
``skdtda.nets.MLP``, whose layers are those of a plain ``nn.Sequential``, or of a
class of ``benchmarks/_architectures.py``) and ``meta.json`` (layer sizes, or
``model`` and ``kwargs``; ``bench_architectures.py`` writes the latter). For each
seed this fits EK-FAC factors on the training rows and computes the (n_query,
n_train) pairwise scores ``g_q^T (F + damping I)^{-1} g_k``; the time of the whole
loop, from the saved weights to all scores, and the process's peak RSS go to
``kronfluence.json``, the scores to ``kronfluence_scores.npy`` (n_seeds, n_query,
n_train). ``--label-seed-offset`` redraws the sampled Fisher labels (a noise
ceiling).

Instead of state dicts, ``modules.pt`` may hold the members' whole modules (as
``torch.save`` pickles them; the venv then needs what defines their classes), and
``meta.json`` may name ``task`` ("classification", the default, or "regression":
summed squared error, Fisher labels drawn as ``f + N(0, 1/2)`` so that their
outer products average to the GGN of ``(f - y)^2``) and ``measurement`` ("loss",
the default, or "margin": the query's logit minus the largest other logit). """

import argparse
import importlib
import json
import logging
import os
import sys
import time
import warnings

from _memory import peak_rss_mib  # benchmarks/ is the script's folder


def _import_kronfluence():
    # kronfluence pulls in a torchvision that may not match the torch wheel and
    # fail on import; kronfluence itself does not need it, so a broken one is
    # replaced by "not installed" (None in sys.modules raises ImportError).
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - any failure means: unusable
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        sys.modules["torchvision"] = None
    import kronfluence

    return kronfluence


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--damping", required=True,
                        help="a float, or 'heuristic': kronfluence's own rule (0.1 x the mean "
                             "eigenvalue)")
    parser.add_argument("--batch", type=int, default=512,
                        help="training rows per batch, for the factors and the scores")
    parser.add_argument("--seeds", type=int, default=None,
                        help="only the first SEEDS members (default: all)")
    parser.add_argument("--label-seed-offset", type=int, default=0,
                        help="torch seed of member s's sampled Fisher labels is s + this")
    parser.add_argument("--tag", default="", help="suffix of the output files")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import TensorDataset

    torch.set_num_threads(1)
    # On CPU kronfluence builds a disabled GradScaler, which warns each time.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    kronfluence = _import_kronfluence()
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    class Classification(Task):
        """Summed cross-entropy: kronfluence divides its factors by the row count, so
        with a summed loss they are the per-row mean, the scale skdtda's curvature has."""

        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if meta.get("task") == "regression":
                out = logits.reshape(len(x), -1)
                target = y.reshape(len(x), -1).to(out.dtype)
                if sample:
                    with torch.no_grad():
                        target = out + torch.randn_like(out) * 0.5 ** 0.5
                return ((out - target) ** 2).sum()
            if sample:
                # the true Fisher (kronfluence's default): labels drawn from the model
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits, dim=-1), 1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            # per-row cross-entropy of each query; per-sample gradients are taken of it
            x, y = batch
            out = model(x)
            if meta.get("task") == "regression":
                return ((out.reshape(len(x), -1) - y.reshape(len(x), -1).to(out.dtype)) ** 2
                        ).mean(dim=1).sum()
            if meta.get("measurement") == "margin":
                correct = out.gather(1, y.long()[:, None])[:, 0]
                others = out.scatter(1, y.long()[:, None], float("-inf"))
                return (correct - others.max(dim=1).values).sum()
            return F.cross_entropy(out, y, reduction="sum")

    folder = args.folder
    data = np.load(os.path.join(folder, "data.npz"))
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    whole = os.path.exists(os.path.join(folder, "modules.pt"))
    members = torch.load(os.path.join(folder, "modules.pt" if whole else "members.pt"),
                         weights_only=not whole)[:args.seeds]
    train = TensorDataset(torch.as_tensor(data["X_train"]), torch.as_tensor(data["y_train"]))
    query = TensorDataset(torch.as_tensor(data["X_query"]), torch.as_tensor(data["y_query"]))
    n_query = len(query)

    def model_of(state_dict):
        if whole:  # the module itself
            return state_dict.eval()
        if "model" in meta:  # one of benchmarks/_architectures.py (torch only)
            from _architectures import MODELS

            model = MODELS[meta["model"]](**meta.get("kwargs", {}))
            model.load_state_dict(state_dict)
            return model.eval()
        sizes = meta["sizes"]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(fan_in, fan_out))
        model = nn.Sequential(*layers)
        model.load_state_dict(state_dict)
        return model

    task = Classification()
    factor_args = FactorArguments(strategy="ekfac")
    # damping_factor is absolute: added to every EK-FAC eigenvalue, as skdtda's damping.
    score_args = ScoreArguments(
        damping_factor=None if args.damping == "heuristic" else float(args.damping))

    def scores_of(seed, state_dict, name, train_set, query_set):
        torch.manual_seed(seed + args.label_seed_offset)  # the sampled Fisher labels
        model = prepare_model(model_of(state_dict), task)
        analyzer = Analyzer(analysis_name=name, model=model, task=task, cpu=True,
                            disable_tqdm=True, log_level=logging.WARNING,
                            output_dir=os.path.join(folder, "kronfluence_out"))
        analyzer.fit_all_factors(factors_name="ekfac", dataset=train_set,
                                 per_device_batch_size=args.batch, factor_args=factor_args,
                                 overwrite_output_dir=True)
        # all queries in one batch: a single pass over the training rows per seed
        scores = analyzer.compute_pairwise_scores(
            scores_name="pairwise", factors_name="ekfac", query_dataset=query_set,
            train_dataset=train_set, per_device_query_batch_size=len(query_set),
            per_device_train_batch_size=args.batch, score_args=score_args,
            overwrite_output_dir=True)
        if scores is None:
            scores = analyzer.load_pairwise_scores(scores_name="pairwise")
        return scores["all_modules"].double().numpy()

    # Warm-up on a few rows: one-off costs (lazy imports, first calls) are not attribution.
    small = torch.utils.data.Subset(train, range(256))
    scores_of(0, members[0], "warmup", small, torch.utils.data.Subset(query, range(8)))
    base_mib = peak_rss_mib()

    tic = time.perf_counter()
    out = np.empty((len(members), n_query, len(train)), dtype=np.float32)
    for seed, state_dict in enumerate(members):
        out[seed] = scores_of(seed, state_dict, f"seed{seed}{args.tag}", train, query)
    seconds = time.perf_counter() - tic
    peak_mib = peak_rss_mib()

    np.save(os.path.join(folder, f"kronfluence{args.tag}_scores.npy"), out)
    with open(os.path.join(folder, f"kronfluence{args.tag}.json"), "w") as f:
        json.dump(dict(seconds=seconds, peak_mib=peak_mib, base_mib=base_mib,
                       version=getattr(kronfluence, "__version__", "?"),
                       torch=torch.__version__, batch=args.batch), f)


if __name__ == "__main__":
    main()
