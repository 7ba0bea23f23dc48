"""Retraining ground truth: the measurement's distribution after removing training rows.

Attribution is only as good as its agreement with retraining. For each removal
set, a fresh seed ensemble is trained on the kept rows and measured on the
query rows; its members sample the post-removal distribution that
:class:`~skdtda.InfluenceTransformer` predicts.
"""

import json
import logging
import os
import warnings
from collections.abc import Mapping
from numbers import Integral
from pathlib import Path
from typing import NamedTuple

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from .._cache import settings_key
from .._inputs import is_dataset, n_rows
from ..ensemble import (QueryMeasurement, SeedEnsembleClassifier, check_same_training_data,
                        fit_preprocessing, is_fitted_pipeline, load_array, retrain_sets,
                        rows_as_given, save_array, split_pipeline)

__all__ = ["Distributions", "random_subsets", "leave_one_out", "retrain_distributions",
           "removal_masks"]

logger = logging.getLogger("skdtda")

_SEED_MAX = np.iinfo(np.int32).max


class Distributions(NamedTuple):
    """Samples of a measurement over seeds, before and after each removal.

    Unpacks as ``before, after = distributions``.

    Attributes
    ----------
    before : ndarray of shape (n_seeds, n_query)
        The measurement under each seed with every training row.
    after : ndarray of shape (n_sets, n_seeds, n_query)
        The measurement under each seed after each removal set. For retraining
        the seeds are the same as ``before``'s (paired by seed: the same
        initialisation and the same minibatch-order generator); for
        predictions ``after[j, s]`` is ``before[s]`` shifted by seed ``s``'s
        predicted change.
    """

    before: np.ndarray
    after: np.ndarray

    @property
    def n_sets(self):
        """Number of removal sets."""
        return self.after.shape[0]

    @property
    def n_seeds(self):
        """Number of seeds (samples) per distribution."""
        return self.after.shape[1]

    def subset(self, sets=None, seeds=None, queries=None):
        """The same distributions restricted to some sets, seeds or queries.

        Parameters
        ----------
        sets, seeds, queries : array-like of int, default=None
            Indices to keep along each axis; None keeps all.

        Returns
        -------
        distributions : Distributions
        """
        before, after = self.before, self.after
        if sets is not None:
            after = after[np.asarray(sets)]
        if seeds is not None:
            seeds = np.asarray(seeds)
            before, after = before[seeds], after[:, seeds]
        if queries is not None:
            queries = np.asarray(queries)
            before, after = before[:, queries], after[:, :, queries]
        return Distributions(before, after)


def random_subsets(n_train, n_sets, keep_fraction=0.7, random_state=None):
    """Random removal sets for the linear datamodeling score (LDS).

    Parameters
    ----------
    n_train : int
        Number of training rows N.
    n_sets : int
        Number of removal sets.
    keep_fraction : float, default=0.7
        Share of the rows each set keeps; every set removes the same number,
        ``n_train - round(keep_fraction * n_train)`` rows.
    random_state : int, RandomState instance or None, default=None
        Draws the sets.

    Returns
    -------
    remove : ndarray of bool of shape (n_sets, n_train)
        ``remove[j, k]`` is True when set ``j`` removes row ``k``: pass it as
        ``remove=`` to :func:`retrain_distributions` and
        :func:`~skdtda.evaluation.predict_distributions`.

    Examples
    --------
    >>> from skdtda.evaluation import random_subsets
    >>> remove = random_subsets(10, n_sets=3, keep_fraction=0.7, random_state=0)
    >>> remove.shape, remove.sum(axis=1).tolist()
    ((3, 10), [3, 3, 3])
    """
    if not isinstance(n_train, Integral) or n_train < 1:
        raise ValueError(f"n_train={n_train!r} must be a positive integer")
    if not isinstance(n_sets, Integral) or n_sets < 1:
        raise ValueError(f"n_sets={n_sets!r} must be a positive integer")
    if not 0 < keep_fraction < 1:
        raise ValueError(f"keep_fraction={keep_fraction!r} must lie strictly between 0 and 1")
    n_remove = n_train - int(round(keep_fraction * n_train))
    if n_remove in (0, n_train):
        raise ValueError(f"keep_fraction={keep_fraction} of n_train={n_train} rows removes "
                         f"{'no' if n_remove == 0 else 'every'} row")
    rng = check_random_state(random_state)
    remove = np.zeros((n_sets, n_train), dtype=bool)
    for j in range(n_sets):
        remove[j, rng.choice(n_train, n_remove, replace=False)] = True
    return remove


def leave_one_out(n_train, rows):
    """Removal sets that each remove one training row.

    Parameters
    ----------
    n_train : int
        Number of training rows N.
    rows : array-like of int
        The rows to leave out, one set each.

    Returns
    -------
    remove : ndarray of bool of shape (len(rows), n_train)

    Examples
    --------
    >>> from skdtda.evaluation import leave_one_out
    >>> leave_one_out(4, [0, 2]).astype(int)
    array([[1, 0, 0, 0],
           [0, 0, 1, 0]])
    """
    rows = np.asarray(rows)
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(f"rows must be integer row indices, got {rows.reshape(-1)[:5].tolist()}")
    return removal_masks([[k] for k in rows.reshape(-1).tolist()], n_train)


def removal_masks(remove, n_train):
    """Removal sets as a boolean matrix.

    Parameters
    ----------
    remove : array-like of bool of shape (n_sets, n_train), or list of array-like of int
        A boolean matrix (True = removed) or one index array per set.
    n_train : int
        Number of training rows N.

    Returns
    -------
    remove : ndarray of bool of shape (n_sets, n_train)
    """
    if remove is None:
        raise ValueError("remove= is required: a boolean matrix of shape (n_sets, n_train) or a "
                         "list of index arrays, one per removal set (see random_subsets and "
                         "leave_one_out)")
    if isinstance(remove, np.ndarray) and remove.dtype == bool:
        if remove.ndim != 2 or remove.shape[1] != n_train:
            raise ValueError(f"a boolean remove matrix must have shape (n_sets, {n_train}), got "
                             f"{remove.shape}")
        masks = remove.copy()
    elif (not isinstance(remove, (list, tuple, np.ndarray))
          or isinstance(remove, np.ndarray) and remove.ndim != 1):
        raise ValueError("remove must be a boolean matrix of shape (n_sets, n_train) or a list "
                         f"of index arrays, got {type(remove).__name__} "
                         f"{getattr(remove, 'shape', '')}")
    else:
        if len(remove) and np.ndim(remove[0]) == 0:
            raise ValueError("remove must list one index array per removal set, e.g. "
                             "[[3], [7, 9]]; for one leave-one-out set per row use "
                             "leave_one_out(n_train, rows)")
        masks = np.zeros((len(remove), n_train), dtype=bool)
        for j, rows in enumerate(remove):
            rows = np.asarray(rows)
            if rows.ndim != 1:
                raise ValueError(f"removal set {j} must be a 1-D array of row indices, got "
                                 f"shape {rows.shape}")
            if not rows.size:  # an empty set removes nothing (an empty list is float)
                continue
            if (not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0
                    or rows.max() >= n_train):
                raise ValueError(f"removal set {j} must hold row indices in [0, {n_train}), "
                                 f"got {rows[:5].tolist()}")
            masks[j, rows] = True
    if len(masks) == 0:
        raise ValueError("remove holds no removal set")
    full = np.flatnonzero(masks.all(axis=1))
    if len(full):
        raise ValueError(f"removal set {full[0]} removes every training row")
    return masks


def _query_labels(y_query, n_query):
    if y_query is None:
        return None
    y_query = np.asarray(y_query).reshape(-1)
    if len(y_query) != n_query:
        raise ValueError(f"y_query has {len(y_query)} rows but X_query has {n_query}")
    return y_query


def _check_classes(masks, y):
    classes = np.unique(y)
    for j, mask in enumerate(masks):
        left = np.unique(y[~mask])
        if len(left) < len(classes):
            missing = np.setdiff1d(classes, left)
            raise ValueError(f"removal set {j} removes every row of class "
                             f"{missing[0].item()!r}; the retrained ensemble could not measure "
                             "queries of that class")


def retrain_distributions(ensemble, X, y, X_query, y_query=None, *, remove, n_seeds=None,
                          measurement="loss", preprocessing="refit", random_state=0, n_jobs=None,
                          memory=None, verbose=0, cache_dir="deprecated"):
    """Measure the query distribution after retraining without each removal set.

    For each removal set, a clone of ``ensemble`` with ``n_seeds`` members is
    trained on the kept rows and measured on the query rows. The full-data
    ensemble and every removal set use the **same seeds** (same
    initialisations, same minibatch-order generators), so the samples are
    paired by seed, as the influence function's samples are; paired seeds
    also make differences of means far less noisy than independent draws.

    Parameters
    ----------
    ensemble : SeedEnsembleClassifier, SeedEnsembleRegressor or Pipeline
        The ensemble to retrain (its settings; it is cloned, never modified).
        Its batched path is used whenever its net allows it; its own
        ``memory`` is not used (it would keep every member of every set;
        this function's ``memory`` keeps each set). If it is
        already fitted, it must have been fitted on ``(X, y)``: the ground
        truth would otherwise describe other training rows than the ones
        its influence attributes. A Pipeline must end in a seed ensemble;
        ``preprocessing`` says whether its other steps are refitted for every
        removal set.
    X : array-like of shape (n_train, n_features), sparse matrix, dict of arrays or Dataset
        The full training rows, in any form the ensemble (or the Pipeline's
        first step) takes; a torch Dataset of ``(x, y)`` items with ``y=None``.
    y : array-like of shape (n_train,) or None
        Their targets (None with a Dataset).
    X_query : array-like of shape (n_query, n_features), sparse matrix, dict or Dataset
        Query rows, in the form of ``X``.
    y_query : array-like of shape (n_query,), default=None
        Query targets. None uses the full-data ensemble's predictions, for
        every removal set (the measurement must stay the same function).
    remove : array-like of bool of shape (n_sets, n_train), or list of array-like of int
        The removal sets: a boolean matrix (True = removed, see
        :func:`random_subsets` and :func:`leave_one_out`) or one index array per set.
    n_seeds : int, default=None
        Members per retrained ensemble; None keeps ``ensemble.n_seeds``. The
        noise of the ground truth falls with it (see :func:`noise_ceiling`).
    measurement : str or callable, default="loss"
        As in :meth:`SeedEnsembleClassifier.measure`.
    preprocessing : {"refit", "fixed"}, default="refit"
        For a Pipeline: "refit" refits the whole Pipeline on the kept rows of
        every removal set (what retraining without the rows really is; a
        scaler's means and a TF-IDF's document frequencies move with the
        rows); "fixed" fits the steps before the ensemble once on all rows
        (or keeps a fitted Pipeline's) and retrains only the ensemble on their
        output, which is what attribution assumes. The gap between the two is
        the fidelity that holding the preprocessing fixed costs. Ignored for
        a bare ensemble.
    random_state : int, RandomState instance or None, default=0
        Draws the seeds shared by all retrained ensembles. An integer is
        needed with ``memory`` (a resumed run must retrain the same seeds).
    n_jobs : int, default=None
        Joblib jobs over removal sets (each set trains its seeds in one
        batched pass). None means 1. Under
        ``joblib.parallel_config(backend="dask")`` the sets are spread over a
        Dask cluster.
    memory : str, path-like, joblib.Memory or None, default=None
        Where to keep each finished set: a folder, or a
        :class:`joblib.Memory` (its ``location``; one with
        ``location=None`` keeps nothing). Each set is one ``.npy`` file,
        named by a hash of everything that determines it (the ensemble's
        settings, the training rows, the queries, the measurement, the
        set), written atomically. A run that is interrupted and started
        again with the same arguments loads the finished sets and retrains
        only the rest; adding sets later reuses the old ones; other settings
        or other data never use them. With a Dask cluster the folder must be
        shared by the workers.
    verbose : int, default=0
        Progress bar over removal sets.
    cache_dir : str or path-like
        Deprecated alias of ``memory``, kept for one release.

        .. deprecated:: 0.1
           Use ``memory`` instead.

    Returns
    -------
    distributions : Distributions
        ``before`` of shape (n_seeds, n_query): the full-data ensemble's
        measurements; ``after`` of shape (n_sets, n_seeds, n_query): the
        measurements after each removal set.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import SeedEnsembleClassifier
    >>> from skdtda.evaluation import leave_one_out, retrain_distributions
    >>> X, y = load_iris(return_X_y=True)
    >>> X = scale(X)
    >>> truth = retrain_distributions(SeedEnsembleClassifier(n_seeds=4), X, y, X[:5], y[:5],
    ...                               remove=leave_one_out(len(X), [0, 1, 2]))
    >>> truth.before.shape, truth.after.shape
    ((4, 5), (3, 4, 5))

    With ``memory``, a second call loads every set instead of retraining:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> args = (SeedEnsembleClassifier(n_seeds=2), X, y, X[:5], y[:5])
    >>> first = retrain_distributions(*args, remove=[[0], [1]], memory=folder)
    >>> again = retrain_distributions(*args, remove=[[0], [1]], memory=folder)
    >>> bool((first.after == again.after).all())
    True
    >>> import shutil
    >>> shutil.rmtree(folder)
    """
    try:
        steps, last = split_pipeline(ensemble, "retrain_distributions")
    except TypeError:
        raise ValueError("ensemble must be a SeedEnsembleClassifier, a SeedEnsembleRegressor or "
                         f"a Pipeline ending in one, got {type(ensemble).__name__}") from None
    if not (isinstance(preprocessing, str) and preprocessing in ("refit", "fixed")):
        raise ValueError(f"preprocessing={preprocessing!r} must be 'refit' or 'fixed'")
    X, y = rows_as_given(X, y)
    X_query, y_query = rows_as_given(X_query, y_query)
    if y is None:
        raise ValueError("retrain_distributions requires y to be passed, but the target y "
                         "is None")
    y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
    if len(y) != n_rows(X):
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"[{n_rows(X)}, {len(y)}]")
    if steps and preprocessing == "fixed":
        # the steps are fitted once (or kept); the ensemble retrains on their output
        preprocessor, ensemble, X = fit_preprocessing(ensemble, X, y, "retrain_distributions")
        X_query = preprocessor.transform(X_query)
        steps = []
    if not steps:
        X = _check_rows(X, "X")
        X_query = _check_rows(X_query, "X_query")
        if hasattr(X, "shape") and hasattr(X_query, "shape") and len(X.shape) > 1 \
                and X_query.shape[1:] != X.shape[1:]:
            raise ValueError(f"X_query has {X_query.shape[1]} features but X has {X.shape[1]}")
    y_query = _query_labels(y_query, n_rows(X_query))
    masks = removal_masks(remove, n_rows(X))
    if isinstance(last, SeedEnsembleClassifier):
        _check_classes(masks, y)
    if n_seeds is not None and (not isinstance(n_seeds, Integral) or n_seeds < 1):
        raise ValueError(f"n_seeds={n_seeds!r} must be a positive integer")
    location = _memory_location(memory, cache_dir)
    if is_fitted_pipeline(ensemble):
        if steps:
            check_same_training_data(last, Pipeline(steps).transform(X), y,
                                     "retrain_distributions")
        else:
            check_same_training_data(ensemble, X, y, "retrain_distributions")
    if location is not None and not isinstance(random_state, Integral):
        raise ValueError(f"memory needs an integer random_state (got {random_state!r}): a "
                         "resumed run must retrain with the same seeds")
    seed = int(check_random_state(random_state).randint(_SEED_MAX))
    # The ensemble's own memory= would keep every member of every removal set on disk;
    # the unit kept here is the set (memory= of this function).
    prefix = f"{_last_step_name(ensemble)}__" if steps else ""
    settings = dict(random_state=seed, verbose=0, memory=None,
                    **({} if n_seeds is None else {"n_seeds": n_seeds}))
    template = clone(ensemble).set_params(**{prefix + k: v for k, v in settings.items()})

    folder = _cache_folder(location, template, X, y, X_query, y_query, measurement)
    before = load_array(folder / "full.npy") if folder is not None else None
    if before is not None and y_query is None:  # the labels the stored sets measured
        y_query = load_array(folder / "y_query.npy")
        before = None if y_query is None else before
    if before is None:
        full = clone(template).fit(X, y)
        if y_query is None:
            y_query = full.predict(X_query)
        before = QueryMeasurement(X_query, y_query, measurement)(full)
        if folder is not None:
            save_array(folder / "y_query.npy", np.asarray(y_query))
            save_array(folder / "full.npy", before)
    n_stored = 0
    if folder is not None:
        n_stored = sum((folder / f"set-{joblib.hash(np.packbits(m))[:16]}.npy").exists()
                       for m in masks)
    if n_stored:
        logger.info("retrain_distributions: %d of %d removal sets loaded from %s",
                    n_stored, len(masks), location)
    before, after = retrain_sets(template, X, y, masks,
                                 QueryMeasurement(X_query, y_query, measurement), before=before,
                                 folder=folder, n_jobs=n_jobs, verbose=verbose)
    return Distributions(before, after)


def _memory_location(memory, cache_dir):
    """The folder of ``memory=`` (or of its deprecated alias), or None."""
    if not (isinstance(cache_dir, str) and cache_dir == "deprecated"):
        if memory is not None:
            raise ValueError("pass memory= only; cache_dir= is its deprecated alias, and both "
                             f"were given (memory={memory!r}, cache_dir={cache_dir!r})")
        warnings.warn("cache_dir= is deprecated and will be removed in the next release; "
                      "pass memory= (a folder or a joblib.Memory), the name of on-disk "
                      "caching everywhere in skdtda", FutureWarning, stacklevel=3)
        memory = cache_dir
    if memory is None or isinstance(memory, (str, os.PathLike)):
        return memory
    if hasattr(memory, "cache") and hasattr(memory, "location"):
        return memory.location
    raise ValueError("memory should be None, a folder (str or path-like) or a joblib.Memory; "
                     f"got {memory!r}")


def _check_rows(X, name):
    """An array or sparse matrix checked as before (a dict is the ensemble's to
    check)."""
    if isinstance(X, Mapping) or is_dataset(X):
        return X
    return check_array(X, accept_sparse="csr", dtype="numeric", input_name=name,
                       allow_nd=True)


def _last_step_name(pipeline):
    """The ``set_params`` path of a Pipeline's last step (nested Pipelines too)."""
    name, step = pipeline.steps[-1]
    return f"{name}__{_last_step_name(step)}" if isinstance(step, Pipeline) else name


def _cache_folder(location, template, X, y, X_query, y_query, measurement):
    """The cache's sub-folder for everything that determines the measurements but the set."""
    if location is None:
        return None
    # memory only says where members are kept; it does not change them (and it
    # was not a setting when the first caches were written, whose keys stay valid)
    key = joblib.hash((settings_key(template, exclude=("memory",)), X, y, X_query, y_query,
                       measurement))
    folder = Path(location) / key[:16]
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "settings.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({
            "ensemble": repr(template), "n_train": int(n_rows(X)), "n_query": int(n_rows(X_query)),
            "y_query": "given" if y_query is not None else "predicted by the full-data ensemble",
            "measurement": repr(measurement)}, indent=1))
    return folder
