"""unrolled_response: the parameter response of one trained net to removal sets."""

import numpy as np
import torch
from skorch import NeuralNetClassifier

from ..._loops import chunks
from ._replay import _Replay

__all__ = ["unrolled_response"]

def unrolled_response(net, init_seed, order_seed, X, y, remove, *, kind=None, n_tangents=64,
                      renormalize=True):
    """Response of one trained net's parameters to removing rows or sets of rows.

    Replays ``net``'s training (initialised under ``torch.manual_seed(init_seed)``,
    minibatches drawn from ``torch.Generator().manual_seed(order_seed)``, as
    :class:`SeedEnsembleClassifier` trains its members) and differentiates the
    final parameters through every optimizer step in forward mode.

    Parameters
    ----------
    net : skorch.NeuralNet
        A fitted net, trained on ``X, y`` under the two seeds. Its initial
        weights are rebuilt as ``clone(net)`` initialized under ``init_seed``,
        so its module must be given as a class (an instance keeps its trained
        weights through the clone); compare the returned ``theta`` with the
        net's own parameters.
    init_seed, order_seed : int
        The seeds of its initialisation and minibatch order.
    X : ndarray of shape (n_samples, n_features)
        Training inputs, in the net's dtype.
    y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        Training targets in the form the net trained on.
    remove : list of array-like of int, or ndarray of bool of shape (n_sets, n_samples)
        The removal sets, each a list of row indices (one row each for
        leave-one-out).
    kind : {"classifier", "regressor"}, default=None
        None reads it from the net's class.
    n_tangents : int, default=64
        Directions carried through one replay.
    renormalize : bool, default=True
        Remove each set from the mean over the remaining rows (as retraining
        on fewer rows does). False keeps the other rows' weights at ``1/B``
        per minibatch (the paper's Eq. 4 with ``eps = 1``).

    Returns
    -------
    theta : ndarray of shape (n_params,)
        The replayed final parameters (compare with the net's own).
    response : ndarray of shape (n_sets, n_params)
        First-order change of the final parameters when each set is removed.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import SeedEnsembleClassifier
    >>> from skdtda.influence import unrolled_response
    >>> X, y = load_iris(return_X_y=True)
    >>> ens = SeedEnsembleClassifier(n_seeds=1, random_state=0).fit(scale(X), y)
    >>> theta, response = unrolled_response(
    ...     ens.estimators_[0], ens.init_seeds_[0], ens.order_seeds_[0],
    ...     scale(X).astype(np.float32), y, remove=[[0], [1, 2]])
    >>> response.shape
    (2, 259)
    """
    if kind is None:
        kind = "classifier" if isinstance(net, NeuralNetClassifier) else "regressor"
    replay = _Replay(net, init_seed, order_seed, X, y, kind)
    n = len(replay.X)
    mask = np.asarray(remove, dtype=object) if not isinstance(remove, np.ndarray) else remove
    if isinstance(mask, np.ndarray) and mask.dtype == bool:
        sets = [np.flatnonzero(row) for row in np.atleast_2d(mask)]
    else:
        sets = [np.atleast_1d(np.asarray(s, dtype=int)) for s in remove]
    dtype = replay.theta0.dtype
    directions = torch.zeros(len(sets) + int(renormalize), n, dtype=dtype)
    for i, rows in enumerate(sets):
        directions[i, torch.as_tensor(rows)] = -1
    if renormalize:
        directions[-1] = 1
    theta, tangents = None, []
    for rows in chunks(len(directions), n_tangents):
        theta, part = replay.run(directions[rows])
        tangents.append(part)
    tangents = torch.cat(tangents)
    if renormalize:
        sizes = torch.tensor([len(s) for s in sets], dtype=dtype)
        tangents = tangents[:-1] + sizes[:, None] * tangents[-1] / n
    return theta.detach().cpu().numpy(), tangents.detach().cpu().numpy()
