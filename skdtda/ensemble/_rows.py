"""The training and query rows of a seed ensemble, in every form a skorch net takes.

An ensemble accepts what its nets accept (see :mod:`skdtda._inputs`):

- an array or DataFrame, validated as scikit-learn does (``n_features_in_``,
  ``feature_names_in_``);
- a scipy sparse matrix (TF-IDF features), kept sparse as CSR: minibatches
  are densified one at a time;
- a dict of arrays, one per argument of the module's ``forward``, each with
  its own row shape and dtype (the rows are the arrays' first axis);
- a torch ``Dataset`` of ``(x, y)`` items with ``y=None``, as skorch takes
  it: read once, item by item, into arrays.

Integer arrays (token ids for ``nn.Embedding``) stay integer when the module
holds an embedding layer, and in a dict always (each argument keeps its kind);
elsewhere every array is cast to the nets' floating point dtype.
"""

from collections.abc import Mapping

import numpy as np
from scipy import sparse
from sklearn.utils.validation import check_array, validate_data
from torch import nn

from .._inputs import MultiInput, is_dataset, n_rows, read_dataset

__all__ = ["check_rows", "net_form", "rows_as_given", "uses_token_ids"]


def _is_integer(dtype):
    return np.issubdtype(dtype, np.integer)


def rows_as_given(X, y):
    """``(X, y)`` with a Dataset read into arrays and a dict as a
    :class:`~skdtda._inputs.MultiInput`; arrays as they are. ``y`` must be None
    with a Dataset (its items hold the targets)."""
    if is_dataset(X):
        if y is not None:
            raise ValueError(
                f"X is a torch Dataset ({type(X).__name__}), whose items hold the targets, "
                "so y must be None, as in skorch")
        return read_dataset(X)
    if isinstance(X, Mapping):
        return _check_mapping(X), y
    return X, y


def _check_mapping(X):
    if not len(X):
        raise ValueError("X is an empty dict; a dict input holds one array per argument "
                         "of the module's forward")
    bad = [name for name in X if not isinstance(name, str)]
    if bad:
        raise ValueError(f"a dict input's keys name the module's forward arguments and must be "
                         f"strings, got {bad[0]!r}")
    arrays = {}
    for name, value in X.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        arrays[name] = check_array(value, dtype="numeric", ensure_2d=False, allow_nd=True,
                                   input_name=f"X[{name!r}]")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the arrays of a dict input must have one row per sample each, got "
                         f"{lengths} rows")
    return MultiInput(arrays)


def check_rows(estimator, X, y=None, *, reset, **check_params):
    """Validate rows as the estimator's ``fit`` (``reset=True``) or prediction
    methods take them; returns ``(X, y)`` (``y`` only when given or read from a
    Dataset).

    Arrays go through ``validate_data`` (CSR accepted, integers kept); a dict
    through per-array checks, its names and row shapes recorded at fit
    (``_multi_input_``) and compared afterwards.
    """
    X, y = rows_as_given(X, y)
    if isinstance(X, MultiInput):
        if reset:
            estimator._multi_input = {name: a.shape[1:] for name, a in X.items()}
            for attribute in ("n_features_in_", "feature_names_in_"):
                if hasattr(estimator, attribute):
                    delattr(estimator, attribute)
        else:
            _check_same_arguments(estimator, X)
        if y is not None:
            y = _check_y(y, n_rows(X), **check_params)
        return X, y
    if not reset and getattr(estimator, "_multi_input", None) is not None:
        raise ValueError(f"{type(estimator).__name__} was fitted on a dict of arrays (arguments "
                         f"{sorted(estimator._multi_input)}), X is a {type(X).__name__}")
    if reset:
        estimator._multi_input = None
    params = dict(accept_sparse="csr", dtype="numeric")
    if y is None and not reset:
        return validate_data(estimator, X, reset=False, **params), None
    X, y = validate_data(estimator, X, y, reset=reset, **params, **check_params)
    return X, y


def _check_y(y, n, y_numeric=False, multi_output=False):
    y = check_array(y, ensure_2d=False, dtype="numeric" if y_numeric else None,
                    input_name="y")
    if y.ndim == 2 and y.shape[1] == 1 and not multi_output:
        y = y.reshape(-1)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    return y


def _check_same_arguments(estimator, X):
    fitted = estimator._multi_input
    if fitted is None:
        raise ValueError(f"{type(estimator).__name__} was fitted on an array, X is a dict of "
                         f"arrays (arguments {sorted(X)})")
    if set(X) != set(fitted):
        raise ValueError(f"X has the arguments {sorted(X)}, but {type(estimator).__name__} was "
                         f"fitted on {sorted(fitted)}")
    for name, shape in fitted.items():
        if X[name].shape[1:] != shape:
            raise ValueError(f"X[{name!r}] has rows of shape {X[name].shape[1:]}, but "
                             f"{type(estimator).__name__} was fitted on rows of shape {shape}")


def uses_token_ids(module):
    """Whether integer inputs stay integer for this module: it holds an embedding."""
    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules())


def net_form(X, dtype, keep_integer):
    """Validated rows in the form the nets train on: floats (and integers unless
    ``keep_integer``) in the nets' ``dtype``, integers as int64, a sparse matrix
    as CSR in ``dtype``, a dict array by array (integers always kept)."""
    if isinstance(X, Mapping):
        return MultiInput({name: net_form(value, dtype, True) for name, value in X.items()})
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=dtype)
        if not X.has_sorted_indices:
            # on a copy: a dtype cast may share the caller's index arrays, which sorting
            # in place would permute under the caller's unpermuted data
            X = X.copy()
            X.sort_indices()
        return X
    X = np.asarray(X)
    if keep_integer and _is_integer(X.dtype):
        return np.require(X, dtype=np.int64, requirements=["C", "W"])
    return np.require(X, dtype=dtype, requirements=["C", "W"])
