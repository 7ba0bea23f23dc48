"""
Attributing a pipeline with categorical features
================================================

Tabular data as it usually arrives: a pandas DataFrame with string
categories next to numbers, rows labelled by an id, and a
``ColumnTransformer`` that one-hot encodes the categories and scales the
numbers in front of the model. :class:`~skdtda.InfluenceTransformer` takes the
whole Pipeline:

- the ``ColumnTransformer`` is fitted on the training rows and held fixed
  while the seed ensemble behind it is attributed;
- with ``set_output(transform="pandas")`` the scores come back as a DataFrame
  whose columns are the training DataFrame's index (customer ids here) and
  whose rows are the queries' index, so a score is looked up by id.

The data are generated (no download): customers of a phone company, whether
they left, their plan, region and contract, and three numbers. One region,
"island", has only a handful of customers.

Every score is the predicted change of the query's loss when the training row
is removed, already divided by the number of training rows: positive means
removing the row raises the loss, so the row was helping.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_categorical_pipeline.py``.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.nets import MLP

torch.set_num_threads(1)
pd.set_option("display.width", 120)
pd.set_option("display.max_columns", 10)

# %%
# Customers, and who left
# -----------------------
# Leaving is more likely on a monthly contract, on the basic plan, with many
# support calls and a short tenure; customers on the island leave far more
# often than the rest, which only their few rows can teach the model.
rng = np.random.RandomState(0)
n, n_train = 400, 300
regions = rng.choice(["north", "south", "east", "west"], n).astype(object)
regions[rng.choice(n_train, 6, replace=False)] = "island"  # six training customers
regions[n_train + rng.choice(n - n_train, 2, replace=False)] = "island"  # two test ones
customers = pd.DataFrame({
    "plan": rng.choice(["basic", "standard", "premium"], n, p=[0.4, 0.4, 0.2]),
    "region": regions,
    "contract": rng.choice(["monthly", "yearly"], n),
    "tenure_months": rng.gamma(2.0, 12.0, n).round(),
    "monthly_charge": rng.normal(45, 15, n).clip(10).round(2),
    "support_calls": rng.poisson(1.5, n),
}, index=pd.Index([f"C{i:04d}" for i in range(n)], name="customer"))
logit = 2 * (-1.0 + 1.2 * (customers["contract"] == "monthly")
             + 0.8 * (customers["plan"] == "basic") - 0.6 * (customers["plan"] == "premium")
             + 0.5 * customers["support_calls"] - 0.04 * customers["tenure_months"]
             + 2.0 * (customers["region"] == "island"))
left = pd.Series((rng.rand(n) < 1 / (1 + np.exp(-logit))).astype(int), index=customers.index,
                 name="left")
X_train, y_train = customers.iloc[:n_train], left.iloc[:n_train]
X_test, y_test = customers.iloc[n_train:], left.iloc[n_train:]
print(X_train.head())
print(f"{len(X_train)} training customers, {y_train.mean():.0%} left; on the island: "
      f"{(X_train['region'] == 'island').sum()} customers")

# %%
# The Pipeline: encode, scale, then 8 seeds of a small network
# ------------------------------------------------------------
# ``handle_unknown="ignore"`` lets the encoder meet a category it was not
# fitted on; retraining without rows (``skdtda.evaluation``) refits it on the
# kept rows, which may have lost a rare one.
columns = ColumnTransformer([
    ("categories", OneHotEncoder(handle_unknown="ignore"), ["plan", "region", "contract"]),
    ("numbers", StandardScaler(), ["tenure_months", "monthly_charge", "support_calls"]),
])
net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                          criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                          optimizer__momentum=0.9, lr=0.05, max_epochs=40, batch_size=32,
                          train_split=None, verbose=0)
model = make_pipeline(columns, SeedEnsembleClassifier(net, n_seeds=8, random_state=0))
model.fit(X_train, y_train)
print(f"test accuracy {model.score(X_test, y_test):.3f} "
      f"(always 'stayed': {1 - y_test.mean():.3f})")

influence = InfluenceTransformer(model).set_output(transform="pandas")
influence.fit(X_train, y_train)

# %%
# Scores by customer id
# ---------------------
# Two test customers: one on the island and one in the north. ``transform``
# scores the loss at the ensemble's predicted label; the loss at the label
# that happened is the question here, so ``influence_samples`` (per seed, with
# the true labels) is averaged over seeds and put in a DataFrame with the same
# labels that ``transform`` gives.
queries = [X_test.index[X_test["region"] == "island"][0],
           X_test.index[X_test["region"] == "north"][0]]
X_q, y_q = X_test.loc[queries], y_test.loc[queries]
print(X_q.assign(left=y_q))
scores = pd.DataFrame(influence.influence_samples(X_q, y_q).mean(axis=0),
                      index=X_q.index, columns=influence.get_feature_names_out())
print(f"transform gives the same labels: "
      f"{list(influence.transform(X_q).columns[:3])}... x {list(influence.transform(X_q).index)}")

for query in queries:
    row = scores.loc[query]
    print(f"\n{query} ({X_q.loc[query, 'region']}, left={y_q[query]}): most helpful")
    top = row.nlargest(4).index
    print(X_train.loc[top].assign(left=y_train.loc[top], score=row[top].round(4)))
    print("most harmful")
    bottom = row.nsmallest(4).index
    print(X_train.loc[bottom].assign(left=y_train.loc[bottom], score=row[bottom].round(4)))

# %%
# How much of each query's attribution lies with its own region? The share of
# the total absolute score carried by the training rows of the same region:
for query in queries:
    same = X_train["region"] == X_q.loc[query, "region"]
    share = scores.loc[query, same].abs().sum() / scores.loc[query].abs().sum()
    print(f"{query}: {same.sum()} training rows of region {X_q.loc[query, 'region']!r} "
          f"({same.mean():.0%} of rows) carry {share:.0%} of the absolute score")

# %%
# The island query left, as five of the island's six training customers did.
# Those five all help it (removing any raises its loss); the one who stayed,
# C0149, is among its most harmful rows. Together the six carry five times
# their share of rows, but the single largest scores belong to customers of
# other regions who resemble the query on plan, contract and calls. The
# north query's attribution lies mostly with northern customers on its plan.
island = X_train.index[X_train["region"] == "island"]
print(f"\nthe island's training customers, scored for {queries[0]}:")
print(X_train.loc[island].assign(left=y_train.loc[island],
                                 score=scores.loc[queries[0], island].round(4)))

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=False)
for ax, query in zip(axes, queries):
    row = scores.loc[query]
    same = (X_train["region"] == X_q.loc[query, "region"]).to_numpy()
    ax.scatter(X_train["tenure_months"][~same], row[~same], s=12, alpha=0.5,
               color="tab:gray", label="other regions")
    ax.scatter(X_train["tenure_months"][same], row[same], s=30, color="tab:orange",
               label=f"region {X_q.loc[query, 'region']!r}")
    for customer in row.abs().nlargest(3).index:
        ax.annotate(customer, (X_train.loc[customer, "tenure_months"], row[customer]),
                    fontsize=7)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(xlabel="tenure of the training customer (months)",
           ylabel="predicted change of the query's loss when removed",
           title=f"query {query} ({X_q.loc[query, 'region']}, left={y_q[query]})")
    ax.legend(fontsize=8)
plt.show()
