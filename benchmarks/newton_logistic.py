"""First order against correction="newton" on L2-logistic regression, leave-one-out.

    OMP_NUM_THREADS=1 python benchmarks/newton_logistic.py

200 rows of scikit-learn's breast cancer (standardised), a 2-class softmax
linear model trained with weight decay ``wd``, set to the optimum that Newton's
method finds in numpy; every row is left out and the model refitted by Newton's
method from that optimum. Measurement: the margin of 10 held-out queries.
Exact influence (``curvature="exact", damping=0``), first order and Newton:
correlation with the refits, and ``||retrained|| / ||predicted||`` over all
query x row pairs and over the 5 rows with the largest changes. The setting of
``tests/test_newton.py::test_newton_fixes_the_leave_one_out_size_on_logistic_regression``
(which asserts ``wd=0.1``); the numbers are in docs/influence.md.
"""

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.nets import MLP


def softmax_newton(A, Y, wd, theta, steps=30):
    """Minimise mean_i CE(softmax(Theta a_i), y_i) + wd/2 |Theta|^2, Theta = [W | b]."""
    n, d = A.shape
    k = Y.shape[1]
    for _ in range(steps):
        z = A @ theta.T
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - Y).T @ A / n + wd * theta
        cov = np.einsum("nk,kl->nkl", p, np.eye(k)) - np.einsum("nk,nl->nkl", p, p)
        hess = np.einsum("nkl,nj,nm->kjlm", cov, A, A).reshape(k * d, k * d) / n
        step = np.linalg.solve(hess + wd * np.eye(k * d), grad.reshape(-1)).reshape(k, d)
        theta = theta - step
        if np.abs(step).max() < 1e-13:
            break
    return theta


def main():
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    data = load_breast_cancer()
    X = StandardScaler().fit_transform(data.data)
    order = np.random.RandomState(0).permutation(len(X))
    train, query = order[:200], order[200:210]
    X_tr, y_tr, X_q, y_q = X[train], data.target[train], X[query], data.target[query]
    A = np.hstack([X_tr, np.ones((len(X_tr), 1))])
    Y = np.eye(2)[y_tr]
    Aq = np.hstack([X_q, np.ones((len(X_q), 1))])

    def margin(t):
        z = Aq @ t.T
        return z[np.arange(len(z)), y_q] - z[np.arange(len(z)), 1 - y_q]

    for wd in (0.1, 0.01):
        net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(),
                                  criterion=torch.nn.CrossEntropyLoss,
                                  optimizer=torch.optim.SGD, optimizer__weight_decay=wd,
                                  lr=0.1, max_epochs=1, batch_size=-1, train_split=None,
                                  verbose=0)
        ens = SeedEnsembleClassifier(net, n_seeds=1, random_state=0).fit(X_tr, y_tr)
        theta = softmax_newton(A, Y, wd, np.zeros((2, A.shape[1])))
        layer = ens.estimators_[0].module_[0]
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(theta[:, :-1]))
            layer.bias.copy_(torch.as_tensor(theta[:, -1]))
        rows = np.arange(len(A))
        truth = np.stack([margin(softmax_newton(A[rows != k], Y[rows != k], wd, theta))
                          - margin(theta) for k in rows], axis=1)
        top = np.argsort(-np.abs(truth).sum(axis=0))[:5]
        for correction in (None, "newton"):
            influence = InfluenceTransformer(ens, curvature="exact", damping=0,
                                             measurement="margin",
                                             correction=correction).fit(X_tr, y_tr)
            pred = influence.influence_samples(X_q, y_q)[0]
            print(f"wd={wd:<5} correction={str(correction):7s} "
                  f"corr={np.corrcoef(pred.ravel(), truth.ravel())[0, 1]:.4f} "
                  f"ratio={np.linalg.norm(truth) / np.linalg.norm(pred):.3f} "
                  f"ratio top-5 rows="
                  f"{np.linalg.norm(truth[:, top]) / np.linalg.norm(pred[:, top]):.3f}")


if __name__ == "__main__":
    main()
