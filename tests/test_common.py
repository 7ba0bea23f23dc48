"""scikit-learn's estimator checks on every public estimator, with tiny nets."""

import atexit
import shutil
import tempfile

import numpy as np
import pytest
import torch
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks
from sklearn.linear_model import LogisticRegression, Ridge, SGDRegressor
from sklearn.neural_network import MLPClassifier
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.nets import MLP


def _classifier():
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              optimizer__momentum=0.9, lr=0.05, max_epochs=20, batch_size=32,
                              train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=2, random_state=0)


def _regressor():
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(16,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=20, batch_size=32,
                             train_split=None, verbose=0)
    return SeedEnsembleRegressor(net, n_seeds=2, random_state=0)


# memory= stores members across the checks' many fits; the folder goes at exit
_MEMORY = tempfile.mkdtemp(prefix="skdtda-checks-")
atexit.register(shutil.rmtree, _MEMORY, ignore_errors=True)

# float32 nets: a row's output can differ at the 1e-7 level with the number of
# rows in the batch (the BLAS picks other kernels for other sizes), which is as
# large as this check's rtol=1e-7. Whether it fails depends on the weights the
# check's random_state=1 draws and on the machine's BLAS, so it is listed per
# instance and marked xfail only when it fails (strict xfails would fail the run
# on a machine where it passes: it passed here and failed on CI, and the reverse).
_FLOAT32_SUBSET = {
    "check_methods_subset_invariance":
        "float32 outputs vary at 1e-7 with the batch size (BLAS kernel choice), the "
        "check's tolerance",
}
_FLOAT32_REGRESSOR = SeedEnsembleRegressor(n_seeds=2)
_KFAC = InfluenceTransformer(_classifier(), curvature="kfac")
# (estimator, its expected failures)
CASES = [
    (_classifier(), {}),
    (_regressor(), {}),
    (SeedEnsembleClassifier(n_seeds=2), {}),
    (_FLOAT32_REGRESSOR, {}),
    (_classifier().set_params(memory=_MEMORY), {}),
    (_KFAC, {}),
    (InfluenceTransformer(_regressor(), curvature="ggn", statistic="wasserstein"), {}),
    # scikit-learn's own models as members
    (SeedEnsembleClassifier(MLPClassifier(hidden_layer_sizes=(16,), max_iter=200), n_seeds=2,
                            random_state=0), {}),
    (SeedEnsembleClassifier(LogisticRegression(), random_state=0), {}),
    (SeedEnsembleRegressor(SGDRegressor(max_iter=20), n_seeds=2, random_state=0), {}),
    (InfluenceTransformer(SeedEnsembleRegressor(Ridge(), random_state=0)), {}),
]
ESTIMATORS = [estimator for estimator, _ in CASES]
EXPECTED_FAILURES = {id(estimator): failures for estimator, failures in CASES}


# may fail, depending on the machine: xfail where they do, pass where they do not
# (the K-FAC transformer's scores of float32 gradients: 1 of 400 differed by 1.7e-7)
MAY_FAIL = {id(_FLOAT32_REGRESSOR): _FLOAT32_SUBSET, id(_KFAC): _FLOAT32_SUBSET}


def _expected_failures(estimator):
    return EXPECTED_FAILURES[id(estimator)]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible(estimator, check):
    name = getattr(check, "func", check).__name__
    reason = MAY_FAIL.get(id(estimator), {}).get(name)
    try:
        check(estimator)
    except AssertionError:
        if reason is None:
            raise
        pytest.xfail(reason)


def test_param_validation():
    for estimator in (_classifier(), _regressor(), InfluenceTransformer(_classifier())):
        check_param_validation(type(estimator).__name__, estimator)


def _search():
    """An AttributionSearchCV with a ground truth of 4 sets over 20 rows and 5 queries: the
    checks of its conventions below need no fit on the checks' own data."""
    from skdtda.evaluation import AttributionSearchCV, random_subsets

    rng = np.random.RandomState(0)
    before = rng.normal(size=(2, 5))
    truth = (before, before[None] + rng.normal(size=(4, 2, 5)))
    return AttributionSearchCV(InfluenceTransformer(_classifier()), {"curvature": ["ggn"]},
                               actual=truth, remove=random_subsets(20, 4, random_state=0),
                               X_query=rng.normal(size=(5, 5)), y_query=np.arange(5) % 2,
                               n_splits=2, random_state=0)


# The estimator checks that need no fit on their own data: every other check fits on rows
# that are not the ground truth's training rows, which the search refuses by design.
SEARCH_CHECKS = [estimator_checks.check_estimator_cloneable,
                 estimator_checks.check_estimator_repr,
                 estimator_checks.check_no_attributes_set_in_init,
                 estimator_checks.check_parameters_default_constructible,
                 estimator_checks.check_get_params_invariance,
                 estimator_checks.check_set_params,
                 estimator_checks.check_do_not_raise_errors_in_init_or_set_params,
                 estimator_checks.check_mixin_order,
                 estimator_checks.check_valid_tag_types,
                 estimator_checks.check_estimator_tags_renamed,
                 check_param_validation]


@pytest.mark.parametrize("check", SEARCH_CHECKS, ids=lambda check: check.__name__)
def test_attribution_search_follows_the_conventions(check):
    check("AttributionSearchCV", _search())
