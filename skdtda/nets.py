"""Small torch modules that the seed ensembles use by default.

The default nets are deliberately plain (a stack of ``Linear`` layers and an
elementwise activation) so that the batched training path of the ensembles
applies to them, and so that exact curvature stays affordable on them.
"""

from torch import nn

__all__ = ["MLP"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


class MLP(nn.Sequential):
    """Multi-layer perceptron ``Linear -> activation -> ... -> Linear``.

    The output layer has no activation: for classification it returns logits
    (train it with ``torch.nn.CrossEntropyLoss``), for regression the
    prediction.

    Parameters
    ----------
    n_features : int, default=None
        Number of input features. The seed ensembles fill it in from the
        training data when it is left as None.
    n_outputs : int, default=None
        Number of outputs (classes for a classifier, targets for a
        regressor). Filled in by the seed ensembles when left as None.
    hidden_layer_sizes : tuple of int, default=(64,)
        Width of each hidden layer; ``()`` gives a linear model.
    activation : {"relu", "tanh", "gelu", "sigmoid", "softplus"}, default="relu"
        Elementwise nonlinearity between layers.

    Examples
    --------
    >>> import torch
    >>> from skdtda.nets import MLP
    >>> net = MLP(n_features=4, n_outputs=3, hidden_layer_sizes=(8, 8))
    >>> net(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(self, n_features=None, n_outputs=None, hidden_layer_sizes=(64,),
                 activation="relu"):
        if n_features is None or n_outputs is None:
            raise ValueError(
                "MLP needs n_features and n_outputs; pass module__n_features and "
                "module__n_outputs to the skorch net, or let a seed ensemble fill "
                "them in from the data"
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not one of {sorted(_ACTIVATIONS)}"
            )
        sizes = [int(n_features), *map(int, hidden_layer_sizes), int(n_outputs)]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(_ACTIVATIONS[activation]())
            layers.append(nn.Linear(fan_in, fan_out))
        super().__init__(*layers)

    def forward(self, X):
        # skorch hands over the data's own dtype (float64 from most numpy
        # code); the layers' dtype decides, as it would in sklearn.
        return super().forward(X.to(self[0].weight.dtype))
