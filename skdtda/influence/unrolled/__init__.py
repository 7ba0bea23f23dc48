"""UnrolledInfluence: differentiate through each seed's actual training run.

For member ``s`` of a seed ensemble, training is replayed from the member's own
initialisation over the member's own minibatches, with the loss of training
row ``n`` in each minibatch mean weighted by ``1 + eps * w_n``. Forward-mode
differentiation carries ``d theta_t / d eps`` (a *tangent*) through every
optimizer step, next to the parameters themselves, so memory does not grow with
the number of steps. Many removal directions ``w`` travel together as a batch of
tangents: each step costs one gradient plus one Hessian-vector product per
tangent. Reverse mode sweeps back from a query measurement's gradient and gets
its derivative with respect to every row's weight at once, for the same
per-step cost per query, recomputing the trajectory from a fixed number of
snapshots (memory is bounded whatever the number of steps there too).

Removing row ``k`` from the mean over the remaining rows is the direction
``w = -e_k + 1/N`` at ``eps = 1`` (to first order in ``1/N``), which makes the
response, in the long-training limit of small-step SGD, the influence function
of :class:`~skdtda.InfluenceTransformer`:

    delta_sk = (1/N) grad m(theta_s)^T (H_s + wd I)^{-1} (grad l_k(theta_s) - gbar_s)

(Theorem 2 of Mlodozeniec et al., 2025). See ``docs/unrolled.md`` for the
derivation.

The package, by concept:

* ``_replay``: :class:`_Replay`, one member's training replayed with tangents
  (forward) or swept back with cotangents from snapshots (reverse);
* ``_optimizers``: SGD/Adam/AdamW updates, their tangents and their adjoints;
* ``_plain_step``: the hand-written gradient and Hessian-vector step of plain
  MLPs (``torch.func`` for every other module);
* ``_response``: :func:`unrolled_response`, one net's parameter response;
* ``_estimator``: :class:`UnrolledInfluence`.
"""

from ._estimator import UnrolledInfluence
from ._response import unrolled_response

__all__ = ["UnrolledInfluence", "unrolled_response"]
