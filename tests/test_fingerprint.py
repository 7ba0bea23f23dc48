"""A fitted ensemble is only used with the rows it was fitted on; the error says what differs."""

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from skdtda import InfluenceTransformer, SeedEnsembleClassifier, SeedEnsembleRegressor
from skdtda.ensemble import check_same_training_data, fingerprint
from skdtda.evaluation import retrain_distributions
from skdtda.nets import MLP


@pytest.fixture(scope="module")
def data():
    X, y = load_iris(return_X_y=True)
    # every row distinct, so a reordering is told apart from changed values
    X = StandardScaler().fit_transform(X) + 1e-3 * np.arange(len(X))[:, None]
    return X, y


def _ensemble(**kwargs):
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,), criterion=nn.CrossEntropyLoss,
                              optimizer=torch.optim.SGD, lr=0.05, max_epochs=2, batch_size=32,
                              train_split=None, verbose=0)
    return SeedEnsembleClassifier(net, n_seeds=2, random_state=0, **kwargs)


@pytest.fixture(scope="module")
def fitted(data):
    return _ensemble().fit(*data)


def test_the_fingerprint_describes_what_the_nets_saw(data, fitted):
    X, y = data
    fp = fitted.training_fingerprint_
    assert fp.n_samples == 150 and fp.X_shape == (150, 4) and fp.y_shape == (150,)
    assert fp.X_dtype == "float32"  # the default MLP trains in float32
    assert fp.key() == fingerprint(X.astype(np.float32), y).key()
    assert "n_samples=150" in repr(fp)


@pytest.mark.parametrize("change, message", [
    (lambda X, y: (X[:120], y[:120]), "fitted on 150 rows, X has 120"),
    (lambda X, y: (X[::-1], y[::-1]), "same rows as the training data but in another order"),
    (lambda X, y: (np.vstack([X[:140], X[:10] + 1]), y), r"other values: rows 140, 141"),
    (lambda X, y: (X, np.roll(y, 1)), "y has the same shape"),
    (lambda X, y: (X[:, :3], y), "4 features but X has 3"),
    (lambda X, y: (X, np.where(y == 2, 7, y)), "labels the ensemble was not fitted on"),
])
def test_a_fitted_ensemble_refuses_other_rows(data, fitted, change, message):
    X, y = change(*data)
    with pytest.raises(ValueError, match=message):
        InfluenceTransformer(fitted, curvature="kfac").fit(X, y)


def test_the_same_data_in_another_form_is_accepted(data, fitted):
    pd = pytest.importorskip("pandas")
    X, y = data
    check_same_training_data(fitted, X, y, "test")
    check_same_training_data(fitted, X.astype(np.float32), y.astype(np.int32), "test")
    check_same_training_data(fitted, pd.DataFrame(X, columns=list("abcd")), pd.Series(y), "test")
    check_same_training_data(fitted, X.tolist(), y.tolist(), "test")
    InfluenceTransformer(fitted, curvature="kfac").fit(pd.DataFrame(X), pd.Series(y))


def test_a_dataframe_fit_matches_the_ndarray(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X, columns=list("abcd"))
    ens = _ensemble().fit(frame, pd.Series(np.array(["a", "b", "c"])[y]))
    check_same_training_data(ens, frame, np.array(["a", "b", "c"])[y], "test")
    with pytest.raises(ValueError, match="other values"):
        check_same_training_data(ens, frame, np.array(["a", "c", "b"])[y], "test")


def test_values_are_compared_at_the_nets_precision(data):
    X, y = data
    float64 = NeuralNetRegressor(MLP, module__hidden_layer_sizes=(4,), criterion=nn.MSELoss,
                                 optimizer=torch.optim.SGD, lr=0.01, max_epochs=1,
                                 train_split=None, verbose=0, module__n_features=4,
                                 module__n_outputs=1)
    float64.set_params(module=_Float64MLP)
    ens = SeedEnsembleRegressor(float64, n_seeds=1, random_state=0).fit(X, X[:, 0])
    assert ens.training_fingerprint_.X_dtype == "float64"
    with pytest.raises(ValueError, match="X is float32; it is compared in the nets' float64"):
        check_same_training_data(ens, X.astype(np.float32), X[:, 0], "test")
    with pytest.raises(ValueError, match="y has the same shape"):
        check_same_training_data(ens, X, X[:, 0] + 1, "test")


class _Float64MLP(MLP):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.double()


def test_unrolled_influence_and_retraining_check_too(data, fitted):
    from skdtda import UnrolledInfluence

    X, y = data
    ens = _ensemble().fit(X, y)
    with pytest.raises(ValueError, match="UnrolledInfluence: the ensemble was fitted on 150"):
        UnrolledInfluence(ens).fit(X[:100], y[:100])
    with pytest.raises(ValueError, match="retrain_distributions: .*another order"):
        retrain_distributions(fitted, X[::-1], y[::-1], X[:2], y[:2], remove=[[0]])
    # an unfitted ensemble is only a recipe: any rows
    truth = retrain_distributions(_ensemble(), X[:100], y[:100], X[:2], y[:2], remove=[[0]])
    assert truth.after.shape == (1, 2, 2)


def test_an_ensemble_fitted_before_fingerprints_is_not_checked(data):
    X, y = data
    ens = _ensemble().fit(X, y)
    del ens.training_fingerprint_
    check_same_training_data(ens, X[:10], y[:10], "test")


def test_fingerprinting_is_fast():
    X = np.random.RandomState(0).rand(20_000, 500)  # 80 MB
    tic = time.perf_counter()
    fingerprint(X, np.zeros(len(X)))
    # about 0.1 s on one core; a generous bound for a loaded machine
    assert time.perf_counter() - tic < 5


# -- NLLLoss with a module that returns logits ---------------------------------------------

class _LogSoftmaxNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, X):
        return torch.log_softmax(self.lin(X.to(self.lin.weight.dtype)), dim=-1)


class _SoftmaxNet(_LogSoftmaxNet):
    def forward(self, X):
        return torch.softmax(self.lin(X.to(self.lin.weight.dtype)), dim=-1)


@pytest.mark.parametrize("vectorize", [False, True])
def test_nll_loss_on_logits_names_the_fix(data, vectorize):
    X, y = data
    # skorch's default criterion is NLLLoss; the MLP returns logits
    net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,), max_epochs=2,
                              train_split=None, verbose=0)
    ens = SeedEnsembleClassifier(net, n_seeds=2, random_state=0, vectorize=vectorize)
    with pytest.raises(ValueError, match=r"NLLLoss.*logits.*criterion=torch.nn.CrossEntropyLoss"
                                         r".*softmax") as info:
        ens.fit(X, y)
    assert "learning rate" not in str(info.value)
    log_probs = NeuralNetClassifier(_LogSoftmaxNet, max_epochs=2, train_split=None, verbose=0)
    with pytest.raises(ValueError, match="log-probabilities.*softmax.*CrossEntropyLoss"):
        SeedEnsembleClassifier(log_probs, n_seeds=2, random_state=0).fit(X, y)


def test_nll_loss_on_probabilities_and_cross_entropy_on_logits_train(data):
    X, y = data
    probs = NeuralNetClassifier(_SoftmaxNet, max_epochs=2, train_split=None, verbose=0)
    SeedEnsembleClassifier(probs, n_seeds=2, random_state=0).fit(X, y)
    logits = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(4,), max_epochs=2,
                                 criterion=nn.CrossEntropyLoss, train_split=None, verbose=0)
    SeedEnsembleClassifier(logits, n_seeds=2, random_state=0).fit(X, y)


def test_a_net_that_takes_the_log_itself_is_left_alone(data):
    X, y = data

    class LogitsNLL(NeuralNetClassifier):
        def get_loss(self, y_pred, y_true, *args, **kwargs):
            return nn.functional.cross_entropy(y_pred, y_true.long())

    net = LogitsNLL(MLP, module__hidden_layer_sizes=(4,), max_epochs=2, train_split=None,
                    verbose=0)
    SeedEnsembleClassifier(net, n_seeds=1, random_state=0, vectorize=False).fit(X, y)
