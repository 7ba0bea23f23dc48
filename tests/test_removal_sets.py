"""predict_removal_sets: the before/after samples of many removal sets, the one
implementation behind predict_removal and skdtda.evaluation.predict_distributions."""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.preprocessing import scale

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, UnrolledInfluence
from skdtda.evaluation import predict_distributions, random_subsets


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return scale(X), y


@pytest.mark.parametrize("make", [
    lambda ens: InfluenceTransformer(ens, curvature="ggn"),
    lambda ens: InfluenceTransformer(ens, curvature="ekfac", damping=1e-2),
    lambda ens: InfluenceTransformer(ens, curvature="ggn", correction="newton"),
    lambda ens: UnrolledInfluence(ens, mode="reverse", n_tangents=8),
], ids=["ggn", "ekfac", "ggn-newton", "unrolled"])
def test_sets_agree_with_predict_removal_and_predict_distributions(iris, make):
    X, y = iris
    ens = SeedEnsembleClassifier(n_seeds=2, random_state=0).fit(X, y)
    influence = make(ens).fit(X, y)
    remove = random_subsets(len(X), n_sets=3, keep_fraction=0.9, random_state=0)
    remove[0] = False
    remove[0, 7] = True  # one row
    before, after = influence.predict_removal_sets(X[:5], y[:5], remove=remove)
    assert before.shape == (2, 5) and after.shape == (3, 2, 5)
    np.testing.assert_allclose(before, influence.measure(X[:5], y[:5]), rtol=1e-12)
    for mask, samples in zip(remove, after):
        np.testing.assert_allclose(influence.predict_removal(X[:5], y[:5], remove=mask),
                                   samples, rtol=1e-10, atol=1e-12)
    truth = predict_distributions(influence, X[:5], y[:5], remove=remove)
    np.testing.assert_array_equal(truth.before, before)
    np.testing.assert_array_equal(truth.after, after)
    if not isinstance(influence, InfluenceTransformer) or influence.correction is None:
        # first order: the sum of the per-row changes over each set
        delta = influence.influence_samples(X[:5], y[:5])
        np.testing.assert_allclose(after - before, np.einsum("sqt,mt->msq", delta, remove),
                                   rtol=1e-10, atol=1e-12)


def test_sets_refuse_anything_but_a_boolean_matrix(iris):
    X, y = iris
    ens = SeedEnsembleClassifier(n_seeds=2, random_state=0).fit(X, y)
    influence = InfluenceTransformer(ens, curvature="identity").fit(X, y)
    with pytest.raises(ValueError, match=r"boolean array of shape \(n_sets, 150\)"):
        influence.predict_removal_sets(X[:2], remove=[[0, 1]])
    with pytest.raises(ValueError, match=r"boolean array of shape \(n_sets, 150\)"):
        influence.predict_removal_sets(X[:2], remove=np.zeros(150, dtype=bool))
    with pytest.raises(ValueError, match="removal set 1 removes every training row"):
        influence.predict_removal_sets(X[:2], remove=np.array([[False] * 150, [True] * 150]))
