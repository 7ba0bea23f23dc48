"""Retraining an ensemble's recipe without sets of rows, and measuring the result.

The ground truth of :func:`skdtda.evaluation.retrain_distributions` and the small
retraining that ``damping="calibrate"`` scores its candidates on are the same
work: an unfitted ensemble with a fixed ``random_state`` (so that every set is
trained with the same seeds) is fitted on all rows and on the kept rows of each
removal set, and each fit measures the query rows. Finished sets can be kept in
a folder, one ``.npy`` file a set written atomically, so that an interrupted
run loses nothing it finished.
"""

import os
import tempfile
import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from joblib import effective_n_jobs
from sklearn.utils.parallel import Parallel, delayed

from .._inputs import take_rows
from .._loops import progress
from ..exceptions import UndertrainedWarning
from ._pipeline import split_pipeline
from ._seed_ensemble import _BaseSeedEnsemble, fit_row_sets

__all__ = ["QueryMeasurement", "load_array", "retrain_sets", "save_array"]


def save_array(path, values):
    """Write ``values`` to ``path`` (``.npy``) under a temporary name, then rename it:
    an interrupted write never leaves a truncated file that a resumed run would
    take for finished work."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npy")
    with os.fdopen(fd, "wb") as f:
        np.save(f, values)
    os.replace(tmp, path)


def load_array(path):
    """The array at ``path``, or None where there is none (or a damaged one)."""
    try:
        return np.load(path)
    except (OSError, ValueError, EOFError):
        return None


class QueryMeasurement:
    """``measure(fitted_ensemble)``: :meth:`SeedEnsembleClassifier.measure` of fixed
    query rows (a picklable callable for :func:`retrain_sets`). A fitted Pipeline
    ending in a seed ensemble measures its ensemble on its steps' output of the
    query rows."""

    def __init__(self, X_query, y_query, measurement="loss"):
        self.X_query, self.y_query, self.measurement = X_query, y_query, measurement

    def __call__(self, ensemble):
        steps, ensemble_ = split_pipeline(ensemble, "QueryMeasurement")
        X_query = self.X_query
        if steps:
            try:
                X_query = Pipeline(steps).transform(X_query)
            except ValueError as error:
                # scikit-learn's own message names the value but not why a Pipeline
                # that transforms the queries when fitted on every row fails here
                raise ValueError(
                    "retrain_distributions: the steps before the ensemble, refitted on the "
                    f"rows a removal set keeps, cannot transform X_query ({error}). "
                    "preprocessing='refit' refits them for every removal set, so a value "
                    "seen only in removed rows (a category, a word) is unknown to them: let "
                    "the step ignore unknown values (for example "
                    "OneHotEncoder(handle_unknown='ignore')) or pass preprocessing='fixed'"
                ) from error
        return ensemble_.measure(X_query, self.y_query, measurement=self.measurement)


def _refit(template, X, y):
    """``clone(template).fit(X, y)`` without :class:`~skdtda.UndertrainedWarning`: a
    retraining repeats the recipe of an ensemble whose own fit has warned already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndertrainedWarning)
        return clone(template).fit(X, y)


def _fit_and_measure(template, X, y, keep, measure, path):
    """Retrain on the kept rows and measure; store the result when a path is given."""
    return _measured(_refit(template, take_rows(X, keep), y[keep]), measure, path)


def _measured(fitted, measure, path):
    values = np.asarray(measure(fitted), dtype=np.float64)
    if path is not None:
        save_array(path, values)
    return values


def _quiet(fits):
    """``fits`` (a generator of fits) without :class:`~skdtda.UndertrainedWarning`, as
    :func:`_refit`."""
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndertrainedWarning)
            try:
                item = next(fits)
            except StopIteration:
                return
        yield item


def retrain_sets(template, X, y, masks, measure, *, before=None, folder=None, n_jobs=None,
                 verbose=0, desc="retraining removal sets"):
    """A measurement of the retrained ensemble after retraining without each set of rows.

    With one job and a seed ensemble (not a Pipeline), the sets' ensembles train in
    shared batched passes (:func:`~skdtda.ensemble._seed_ensemble.fit_row_sets`): a
    few seeds per set, as the calibration retrains, cost little more per step than
    one set's; each set's ensemble is the one its own fit gives.

    Parameters
    ----------
    template : SeedEnsembleClassifier, SeedEnsembleRegressor or Pipeline
        Unfitted, with an integer ``random_state``: every set is trained with
        the same seeds (the samples are paired by seed). A Pipeline ending in
        a seed ensemble is refitted whole on every set's kept rows.
    X : array-like, sparse matrix, DataFrame, dict of arrays or list
        All training rows, in any form the template takes (rows are selected
        with :func:`skdtda._inputs.take_rows`).
    y : ndarray
        Their targets.
    masks : ndarray of bool of shape (n_sets, n_train)
        True where a set removes a row.
    measure : callable
        ``measure(fitted_ensemble) -> array of shape (n_seeds, n_query)``, e.g.
        :class:`QueryMeasurement` (picklable, for process-based joblib backends).
    before : ndarray of shape (n_seeds, n_query), default=None
        The measurement with every row, when already known; else the template
        is fitted on all rows too.
    folder : path-like, default=None
        Where to keep each finished set (``set-<hash of its mask>.npy``) and the
        full fit (``full.npy``); they are read back instead of retrained. The
        caller names the folder after everything else that determines them.
    n_jobs : int, default=None
        Joblib jobs over sets.
    verbose : int, default=0
        A progress bar over the sets retrained.
    desc : str
        The bar's label.

    Returns
    -------
    before : ndarray of shape (n_seeds, n_query)
    after : ndarray of shape (n_sets, n_seeds, n_query)
    """
    folder = None if folder is None else Path(folder)
    if before is None and folder is not None:
        before = load_array(folder / "full.npy")
    if before is None:
        before = np.asarray(measure(_refit(template, X, y)), dtype=np.float64)
        if folder is not None:
            save_array(folder / "full.npy", before)
    paths = ([None] * len(masks) if folder is None
             else [folder / f"set-{joblib.hash(np.packbits(m))[:16]}.npy" for m in masks])
    after = np.empty((len(masks),) + before.shape)
    todo = []
    for j, path in enumerate(paths):
        values = load_array(path) if path is not None else None
        if values is not None and values.shape == before.shape:
            after[j] = values
        else:
            todo.append(j)
    if len(todo) > 1 and effective_n_jobs(n_jobs) == 1 and isinstance(template, _BaseSeedEnsemble):
        # small ensembles of several sets share their training passes
        jobs = ((todo[k], _measured(fitted, measure, paths[todo[k]])) for k, fitted in
                _quiet(fit_row_sets(template, X, y, [~masks[j] for j in todo])))
    else:
        jobs = zip(todo, Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_fit_and_measure)(template, X, y, ~masks[j], measure, paths[j])
            for j in todo))
    with progress(len(todo), desc, "set", verbose if todo else 0) as bar:
        for j, values in jobs:
            after[j] = values
            bar.update()
    return before, after
