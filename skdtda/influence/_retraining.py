"""``retraining=``: which retraining the influence of a removal predicts.

Member ``s`` trains on the mean objective ``L = (1/N) sum_i l_i + P_n + P_f``
(``P_n`` an L2 term normalised with the losses, ``P_f`` the fixed ones: the
optimizer's weight decay, a non-normalised penalty). Removing a set ``S`` can be
retrained two ways, and they differ wherever training stopped short of
convergence:

* ``"same_steps"``: the same number of optimizer steps on the mean objective of
  the kept rows, ``(1/N') sum_{i not in S} l_i + (N/N') P_n + P_f``. Full-batch
  training (lbfgs, ``batch_size=-1``) does this when retrained for the same
  epochs. Each removed row contributes ``g_k - gbar`` with ``gbar`` the gradient
  of ``(1/N) sum_i l_i + P_n``: the kept rows are re-weighted.
* ``"same_epochs"``: the same number of epochs in minibatches, so a set removing
  a fraction ``f`` of the rows also removes a fraction ``f`` of the steps. In
  the small-step limit training follows the gradient of the *sum* over steps,
  ``(E / B) (sum_i l_i + N P_f)`` for ``E`` epochs of batches of ``B``: each row
  brings its loss and its share of the per-step terms, and takes them along
  when removed. Each removed row contributes ``g_k + grad P_f``. This is what
  :func:`skdtda.evaluation.retrain_distributions` does with a minibatch recipe.

Both use the same curvature. They differ by ``f grad m^T (H + damping I)^{-1}
grad L`` per member and query, a shift common to every set of the same size:
it vanishes at a stationary point of ``L``, and it leaves rankings under
``"mean"`` and leave-one-out correlations unchanged, but not the spread over
seeds or the Wasserstein distance. With the damping ``1 / tau`` that training
implies, the shift is, along each slow curvature direction, the first-order
effect of ``f`` fewer steps (docs/influence.md).
"""

import logging

from ..model import TrainingRecipe

__all__ = ["RETRAINING", "retraining_protocol"]

logger = logging.getLogger("skdtda")

#: The values of ``retraining=``.
RETRAINING = ("auto", "same_epochs", "same_steps")


def retraining_protocol(members, n_train, retraining="auto"):
    """``(protocol, how)``: ``retraining`` itself, or what ``"auto"`` reads from
    the members' recipe (``"same_steps"`` where it says nothing)."""
    if retraining != "auto":
        return retraining, "given"
    found = {TrainingRecipe.read(member, n_train).retraining() for member in members}
    if len(found) != 1 or None in {p for p, _ in found}:
        how = "; ".join(sorted(h for _, h in found))
        logger.info("retraining='auto': %s; using 'same_steps'", how)
        return "same_steps", f"fallback ({how})"
    return found.pop()
