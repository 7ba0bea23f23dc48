"""pandas in and out: DataFrames give the same numbers as arrays, and named outputs."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_iris
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler, scale
from skorch import NeuralNetClassifier, NeuralNetRegressor

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.nets import MLP

pd = pytest.importorskip("pandas")


def _clf(n_seeds=3):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(8,),
                              criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                              lr=0.1, max_epochs=5, batch_size=32, train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=n_seeds, random_state=0)


@pytest.fixture(scope="module")
def iris():
    data = load_iris(as_frame=True)
    X = pd.DataFrame(scale(data.data), columns=data.data.columns,
                     index=[f"flower{i}" for i in range(len(data.data))])
    y = pd.Series(data.target_names[data.target], index=X.index, name="species")
    return X, y


def test_classifier_on_dataframes_equals_arrays(iris):
    X, y = iris
    frame = _clf().fit(X, y)
    array = _clf().fit(X.to_numpy(), y.to_numpy())
    np.testing.assert_array_equal(frame.feature_names_in_, X.columns)
    assert not hasattr(array, "feature_names_in_")
    np.testing.assert_array_equal(frame.predict_proba(X), array.predict_proba(X.to_numpy()))
    np.testing.assert_array_equal(frame.measure(X, y), array.measure(X.to_numpy(), y.to_numpy()))
    assert set(frame.predict(X)) <= set(y)


def test_classifier_checks_dataframe_columns(iris):
    X, y = iris
    ens = _clf().fit(X, y)
    with pytest.raises(ValueError, match="feature names"):
        ens.predict(X[X.columns[::-1]])


def test_regressor_on_dataframes_equals_arrays():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X, y = X.iloc[:120], (y.iloc[:120] - y.mean()) / y.std()
    net = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(8,), criterion=torch.nn.MSELoss,
                             optimizer=torch.optim.Adam, lr=0.01, max_epochs=4, batch_size=32,
                             train_split=None, verbose=0)
    frame = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X, y)
    array = SeedEnsembleRegressor(net, n_seeds=2, random_state=0).fit(X.to_numpy(),
                                                                      y.to_numpy())
    np.testing.assert_array_equal(frame.predict_members(X),
                                  array.predict_members(X.to_numpy()))
    influence = InfluenceTransformer(frame, measurement="prediction").fit(X, y)
    np.testing.assert_allclose(influence.influence_samples(X.iloc[:3]),
                               InfluenceTransformer(array, measurement="prediction").fit(
                                   X.to_numpy(), y.to_numpy()).influence_samples(
                                   X.to_numpy()[:3]), rtol=1e-10, atol=1e-12)


def test_influence_set_output_pandas_names_training_rows(iris):
    X, y = iris
    ens = _clf().fit(X, y)
    influence = InfluenceTransformer(ens, statistic="wasserstein").fit(X, y)
    expected = influence.transform(X.iloc[:4])
    influence.set_output(transform="pandas")
    out = influence.transform(X.iloc[:4])
    assert isinstance(out, pd.DataFrame)
    # the score columns are the training rows' labels, the query rows keep theirs
    assert list(out.columns) == list(X.index)
    assert list(out.index) == list(X.index[:4])
    np.testing.assert_array_equal(out.to_numpy(), expected)
    # fit_transform takes the same path.
    again = InfluenceTransformer(ens).set_output(transform="pandas").fit_transform(X, y)
    assert again.shape == (len(X), len(X)) and again.columns[-1] == X.index[-1]
    # a default 0, 1, ... index says nothing: the columns keep the array names
    plain = InfluenceTransformer(ens).fit(X.reset_index(drop=True), y.reset_index(drop=True))
    assert plain.get_feature_names_out()[-1] == f"train{len(X) - 1}"


def test_influence_in_a_pandas_pipeline(iris):
    X, y = iris
    pipe = make_pipeline(StandardScaler(), InfluenceTransformer(_clf(2)))
    pipe.set_output(transform="pandas")
    out = pipe.fit(X, y).transform(X.iloc[:2])
    assert isinstance(out, pd.DataFrame) and out.shape == (2, len(X))
    # The transformer saw the scaler's DataFrame, with the original columns, and
    # so did the ensemble it fitted.
    np.testing.assert_array_equal(pipe[-1].feature_names_in_, X.columns)
    np.testing.assert_array_equal(pipe[-1].estimator_.feature_names_in_, X.columns)


def test_predict_removal_accepts_a_boolean_series(iris):
    X, y = iris
    influence = InfluenceTransformer(_clf(2)).fit(X, y)
    remove = pd.Series(np.arange(len(X)) < 5, index=X.index)
    np.testing.assert_allclose(influence.predict_removal(X.iloc[:3], y.iloc[:3], remove=remove),
                               influence.predict_removal(X.iloc[:3], y.iloc[:3],
                                                         remove=np.arange(5)))
