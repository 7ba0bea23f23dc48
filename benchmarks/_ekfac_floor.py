"""The arithmetic floor of EK-FAC attribution: matrix products counted, at the measured rate.

EK-FAC influence from a fitted member to its ``(n_query, n_train)`` matrix cannot
avoid these products (multiply-adds, per attributed layer with ``T`` patches a
row, ``d_in`` inputs counting the bias and ``d_out`` outputs):

* three passes over the training rows (the factors, the eigenvalue refit, the
  scores) and one over the queries, each a forward and a backward product of
  the layer, ``T d_in d_out`` a row each way (the first layer needs no input
  gradient);
* the factors ``sum a a^T`` and ``sum g g^T``: ``T (d_in^2 + d_out^2) / 2`` a
  row (one triangle of each);
* the refit's rotation of every training row, and the queries' rotation, into
  the eigenbases, the cheaper of the two orders: ``T (d_in^2 + d_out^2 + d_in
  d_out)`` from the patches or ``T d_in d_out + d_in d_out (d_in + d_out)``
  from the gradient block;
* the queries' rotation back, ``d_in d_out (d_in + d_out)`` a query;
* the training rows' gradient blocks, ``T d_in d_out`` a row, and their
  products with the solved queries, ``d_in d_out`` per (query, row) pair.

Everything else (unfolding, normalisation, the eigendecompositions, elementwise
work) is left out, so the floor is a lower bound for any implementation of the
same computation, kronfluence's included. ``floor_seconds`` divides the count by
the rate of one large float32 product measured on this machine.
"""

import time

import numpy as np

__all__ = ["ekfac_macs", "floor_seconds", "gemm_gflops", "layer_shapes"]


def layer_shapes(module, x):
    """``[(name, T, d_in, d_out)]`` for the layers that EK-FAC attributes in
    ``module`` (skdtda's own choice of layers), ``x`` a batch of inputs."""
    import torch

    from skdtda.curvature.layers import find_layers

    specs, _ = find_layers(module)
    seen = {}

    def hook_for(spec):
        def hook(mod, args, output):
            per_row = output[0].numel() // spec.shape[0]
            seen[spec.name] = seen.get(spec.name, 0) + per_row
        return hook

    handles = [spec.module.register_forward_hook(hook_for(spec)) for spec in specs]
    try:
        with torch.no_grad():
            module.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return [(spec.name, seen[spec.name], spec.shape[1], spec.shape[0]) for spec in specs
            if spec.name in seen]


def ekfac_macs(shapes, n_train, n_query):
    """Multiply-adds of one member's EK-FAC attribution, by stage (see the module's
    docstring)."""
    out = dict.fromkeys(("passes", "factors", "refit rotation", "query rotations",
                         "row blocks and scores"), 0)
    for k, (_, t, d_in, d_out) in enumerate(shapes):
        layer = t * d_in * d_out
        backward = layer if k else 0
        out["passes"] += (3 * n_train + n_query) * (layer + backward)
        out["factors"] += n_train * t * (d_in ** 2 + d_out ** 2) / 2
        rotate = min(t * (d_in ** 2 + d_out ** 2 + d_in * d_out),
                     layer + d_in * d_out * (d_in + d_out))
        out["refit rotation"] += n_train * rotate
        out["query rotations"] += n_query * (rotate + d_in * d_out * (d_in + d_out))
        out["row blocks and scores"] += n_train * layer + n_train * n_query * d_in * d_out
    return out


def gemm_gflops(n=2048, repeats=5):
    """The best rate of an (n, n) float32 product on one thread, GFLOP/s."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    a @ a
    best = np.inf
    for _ in range(repeats):
        tic = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - tic)
    return 2 * n ** 3 / best / 1e9


def floor_seconds(macs, gflops):
    """Seconds of the counted multiply-adds at ``gflops``."""
    return 2 * sum(macs.values()) / gflops / 1e9
