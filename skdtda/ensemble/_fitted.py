"""What the consumers of a fitted seed ensemble read from it.

Influence estimators and the retraining ground truth work on the members of a
fitted ensemble: as skorch nets (a scikit-learn member as the torch function
it computes), with the inputs and targets in the form the nets trained on, and
from the state each member started its training in. These functions are that
interface; they keep the ensemble's own attributes private.
"""

from ._rows import check_rows
from ._seed_ensemble import _numpy_dtype, initialize_member

__all__ = ["initial_members", "input_dtype", "member_nets", "net_input", "net_targets",
           "query_targets"]


def member_nets(ensemble):
    """The fitted members as skorch nets: themselves, or, for scikit-learn members,
    the torch functions they compute (built once per fit).

    Returns
    -------
    nets : list of skorch.NeuralNet
        One per member of ``ensemble.estimators_``, in order.
    """
    return ensemble._torch_members()


def input_dtype(ensemble):
    """The numpy dtype of the members' inputs (the nets' parameter dtype)."""
    return _numpy_dtype(ensemble._dtype)


def net_input(ensemble, X):
    """Rows in any form the ensemble takes (array, DataFrame, sparse matrix, dict of
    arrays), checked against the ones it was fitted on and converted to the form its
    members' nets take (see :mod:`skdtda.ensemble._rows`)."""
    return ensemble._net_form(check_rows(ensemble, X, reset=False)[0])


def net_targets(ensemble, y):
    """Training targets ``y`` in the form the member nets train on (class indices
    for classifiers, a 2-D float array for regressors)."""
    return ensemble._net_targets(y)


def query_targets(ensemble, X, y):
    """Query targets in the nets' form; the ensemble's prediction when ``y`` is None."""
    return ensemble._query_targets(X, y)


def initial_members(ensemble, indices):
    """The members at ``indices`` as they were before training: rebuilt from the
    ensemble's template (not from the trained member, whose module, if it was
    passed as an instance, would carry the trained weights into a clone) and
    initialised under each member's init seed."""
    template = ensemble._make_template(ensemble._n_net_outputs)
    return [initialize_member(ensemble._member(template, i), ensemble.init_seeds_[i])
            for i in indices]

