"""A fingerprint of the rows a seed ensemble was trained on, and the check that uses it.

Attribution indexes training rows by position: an influence fitted with a seed
ensemble that saw other rows (or the same rows in another order) would score
rows the members never trained on, without any error. The ensemble records a
fingerprint of its training data at fit; every consumer of a fitted ensemble
checks the rows it is given against it and says what differs.

The fingerprint is taken of the data as the member nets saw them: ``X`` in the
nets' dtype and ``y`` in the nets' target encoding (class indices for
classifiers). A consumer passing the same user data (a DataFrame or an
ndarray, float32 or float64 of the same values at the nets' precision)
matches.
"""

import hashlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import sparse

from .._inputs import n_rows
from .._loops import chunks

__all__ = ["TrainingFingerprint", "fingerprint", "check_same_training_data"]

# Rows hashed per block: bounds the temporary copy made when the data are not
# yet in the nets' dtype (about 8 MB), whatever the size of X.
_BLOCK_BYTES = 1 << 23
_MULTIPLIER_SEED = 20260


class TrainingFingerprint(NamedTuple):
    """Shape, dtype and hashes of the training data as the member nets saw them.

    Attributes
    ----------
    n_samples : int
        Number of training rows.
    X_shape : tuple of int
        Shape of ``X``.
    X_dtype : str
        The nets' input dtype, in which ``X`` was hashed.
    y_shape : tuple of int
        Shape of the targets as the nets saw them.
    X_hash, y_hash : str
        BLAKE2b digests of the bytes of ``X`` and of the targets.
    row_hashes : ndarray of uint64 of shape (n_samples,)
        A 64-bit hash of each ``(x, y)`` row; only used to say which rows
        differ (and whether they are merely in another order).
    """

    n_samples: int
    X_shape: tuple
    X_dtype: str
    y_shape: tuple
    X_hash: str
    y_hash: str
    row_hashes: np.ndarray

    def __repr__(self):
        return (f"TrainingFingerprint(n_samples={self.n_samples}, X_shape={self.X_shape}, "
                f"X_dtype={self.X_dtype!r}, X_hash={self.X_hash[:16]!r}, "
                f"y_hash={self.y_hash[:16]!r})")

    def key(self):
        """What identifies the data, for cache keys (the row hashes add nothing)."""
        return (self.n_samples, self.X_shape, self.X_dtype, self.y_shape, self.X_hash,
                self.y_hash)


def _words(block):
    """The bytes of each row of a C-contiguous block as unsigned 64-bit words."""
    raw = block.reshape(len(block), -1).view(np.uint8)
    pad = -raw.shape[1] % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(raw), pad), dtype=np.uint8)], axis=1)
    return raw.view(np.uint64)


def _mix(h):
    # splitmix64's finaliser: every input bit reaches every output bit.
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _row_hash(words):
    multipliers = np.random.RandomState(_MULTIPLIER_SEED + words.shape[1]).randint(
        0, 2**63, size=words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return _mix((words * multipliers).sum(axis=1, dtype=np.uint64))


def fingerprint(X, y, dtype=None):
    """Fingerprint of training data: shapes, dtype, and fast hashes of the bytes.

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...), sparse matrix or dict of ndarray
        Training inputs. A sparse matrix is hashed as its dense rows, block by
        block (so it has the fingerprint of its dense copy); a dict of arrays
        (one per forward argument) hashes each array, in the order of the
        names.
    y : ndarray of shape (n_samples, ...)
        Training targets, as the nets saw them (numeric).
    dtype : numpy dtype, default=None
        Dtype in which ``X`` is hashed (the nets' dtype); None keeps ``X``'s.
        Integer arrays in a dict stay int64. Converted block by block, so no
        full copy of ``X`` is made.

    Returns
    -------
    fingerprint : TrainingFingerprint

    Examples
    --------
    >>> import numpy as np
    >>> from skdtda.ensemble import fingerprint
    >>> X, y = np.arange(6.0).reshape(3, 2), np.array([0, 1, 0])
    >>> fp = fingerprint(X, y)
    >>> fp.n_samples, fp.X_shape, fp.X_dtype
    (3, (3, 2), 'float64')
    >>> fingerprint(X.astype(np.float32), y, dtype=np.float64).X_hash == fp.X_hash
    True
    """
    y = np.ascontiguousarray(y)
    if y.dtype == object:
        raise ValueError("fingerprint needs numeric targets (the nets' encoding)")
    if isinstance(X, Mapping):
        return _multi_fingerprint(X, y, dtype)
    if sparse.issparse(X):
        # hashed as its dense rows, block by block: a sparse matrix and its dense copy
        # have one fingerprint, and the whole dense matrix never exists
        X = sparse.csr_matrix(X)
        dtype = X.dtype if dtype is None else np.dtype(dtype)
        x_hash, rows = _hash_rows(X, dtype, lambda part: X[part].toarray())
    else:
        X = np.asarray(X)
        dtype = X.dtype if dtype is None else np.dtype(dtype)
        x_hash, rows = _hash_rows(X, dtype, lambda part: X[part])
    return _with_targets(n_rows(X), tuple(X.shape), str(dtype), x_hash, rows, y)


def _hash_rows(X, dtype, block_of):
    n = n_rows(X)
    row_bytes = max(1, int(np.prod(X.shape[1:], dtype=np.int64)) * dtype.itemsize)
    step = max(1, _BLOCK_BYTES // row_bytes)
    x_digest = hashlib.blake2b(digest_size=32)
    rows = np.empty(n, dtype=np.uint64)
    for part in chunks(n, step):
        block = np.ascontiguousarray(block_of(part), dtype=dtype)
        x_digest.update(block)
        rows[part] = _row_hash(_words(block))
    return x_digest.hexdigest(), rows


def _multi_fingerprint(X, y, dtype):
    """A dict of arrays (one per forward argument): each array hashed as above (floats
    in ``dtype``, integers as int64), in the order of the names; the shape records
    each argument's name, row shape and dtype."""
    x_digest = hashlib.blake2b(digest_size=32)
    rows, shape, n = None, [], None
    for name in sorted(X):
        value = np.asarray(X[name])
        if n is None:
            n = len(value)
        own = (np.dtype(np.int64) if np.issubdtype(value.dtype, np.integer)
               else value.dtype if dtype is None else np.dtype(dtype))
        part_hash, part_rows = _hash_rows(value, own, lambda part, v=value: v[part])
        x_digest.update(name.encode())
        x_digest.update(part_hash.encode())
        with np.errstate(over="ignore"):
            rows = part_rows if rows is None else _mix(rows * np.uint64(31) + part_rows)
        shape.append((name, tuple(value.shape[1:]), str(own)))
    floats = [kind for _, _, kind in shape if not np.issubdtype(np.dtype(kind), np.integer)]
    float_dtype = (str(np.dtype(dtype)) if dtype is not None
                   else floats[0] if floats else "int64")
    return _with_targets(n, (n,) + tuple(shape), float_dtype, x_digest.hexdigest(), rows, y)


def _with_targets(n, X_shape, X_dtype, x_hash, rows, y):
    y_digest = hashlib.blake2b(y, digest_size=32)
    if n and len(y) == n:
        with np.errstate(over="ignore"):
            rows = _mix(rows * np.uint64(31) + _row_hash(_words(y.reshape(n, -1))))
    return TrainingFingerprint(n, X_shape, X_dtype, tuple(y.shape), x_hash,
                               y_digest.hexdigest(), rows)


def _rows_list(rows, limit=5):
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _difference(fitted, given, X_dtype):
    """A sentence saying how ``given`` differs from ``fitted``, or None when they match."""
    if fitted.n_samples != given.n_samples:
        return (f"the ensemble was fitted on {fitted.n_samples} rows, X has "
                f"{given.n_samples}")
    if fitted.X_shape[1:] != given.X_shape[1:]:
        return (f"the ensemble was fitted on rows of shape {fitted.X_shape[1:]}, X has rows "
                f"of shape {given.X_shape[1:]}")
    if fitted.y_shape != given.y_shape:
        return (f"the ensemble was fitted on targets of shape {fitted.y_shape}, y has "
                f"{given.y_shape}")
    if fitted.key() == given.key():
        return None
    what = ("X and y have" if fitted.X_hash != given.X_hash and fitted.y_hash != given.y_hash
            else "X has" if fitted.X_hash != given.X_hash else "y has")
    a, b = fitted.row_hashes, given.row_hashes
    differ = np.flatnonzero(a != b)
    if len(differ) and np.array_equal(np.sort(a), np.sort(b)):
        return (f"{what} the same rows as the training data but in another order (rows "
                f"{_rows_list(differ)} moved), and attribution indexes rows by position")
    where = (f": rows {_rows_list(differ)} (of {len(a)}) differ" if len(differ)
             else "")
    note = ""
    if fitted.X_hash != given.X_hash and np.dtype(X_dtype) != np.dtype(fitted.X_dtype):
        note = (f" (X is {np.dtype(X_dtype)}; it is compared in the nets' "
                f"{fitted.X_dtype}, the precision the members trained at)")
    return (f"{what} the same shape as the training data (X {fitted.X_shape}) but other "
            f"values{where}{note}")


def check_same_training_data(ensemble, X, y, consumer_name):
    """Raise if a fitted seed ensemble was not trained on exactly ``(X, y)``.

    Parameters
    ----------
    ensemble : SeedEnsembleClassifier or SeedEnsembleRegressor
        A fitted ensemble. One without ``training_fingerprint_`` (fitted by an
        older version) is not checked.
    X : array-like of shape (n_samples, n_features)
        The rows the consumer attributes, as the user passed them (any dtype
        or a DataFrame; they are compared in the nets' dtype).
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Their targets.
    consumer_name : str
        Who checks, for the message (e.g. ``"InfluenceTransformer"``).

    Raises
    ------
    ValueError
        Saying what differs: the number of rows, the row shape, the labels,
        the order of the rows, or which rows hold other values.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skdtda import SeedEnsembleClassifier
    >>> from skdtda.ensemble import check_same_training_data
    >>> X, y = load_iris(return_X_y=True)
    >>> ens = SeedEnsembleClassifier(n_seeds=2, random_state=0).fit(X, y)
    >>> check_same_training_data(ens, X, y, "my_function")
    >>> check_same_training_data(ens, X[:100], y[:100], "my_function")
    Traceback (most recent call last):
        ...
    ValueError: my_function: the ensemble was fitted on 150 rows, X has 100. Pass ...
    """
    fitted = getattr(ensemble, "training_fingerprint_", None)
    if fitted is None:
        return
    X, y = ensemble._rows_as_given(X, y)
    y = np.asarray(y)
    if len(y) != n_rows(X):
        raise ValueError(f"{consumer_name}: y has {len(y)} rows but X has {n_rows(X)}")
    try:
        y_net = ensemble._net_targets(y.reshape(-1) if ensemble._task == "classifier"
                                      and y.ndim == 2 and y.shape[1] == 1 else y)
    except ValueError as exc:
        raise ValueError(f"{consumer_name}: y holds labels the ensemble was not fitted on "
                         f"({exc}); it must be given the ensemble's training data") from exc
    given = fingerprint(X, y_net, dtype=fitted.X_dtype)
    difference = _difference(fitted, given, getattr(X, "dtype", fitted.X_dtype))
    if difference is not None:
        raise ValueError(
            f"{consumer_name}: {difference}. Pass the rows the ensemble was fitted on, in "
            "that order, or an unfitted ensemble (fitted then on these rows)")
