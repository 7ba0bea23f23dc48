"""
How far to trust the scores: a damping calibrated on a small retraining
=======================================================================

An influence function needs a damping, and which damping predicts retraining best
depends on the model, its training and the curvature approximation. With
``damping="calibrate"``, :class:`~skdtda.InfluenceTransformer` measures it: it
retrains the members' own recipe with a few seeds without random sets of rows
(at most ``calibration_budget`` times the ensemble's own fit), scores candidate
dampings around the rule of ``damping="auto"`` by how well they predict that
retraining, and keeps the best where its gain over the rule's value is clear of
the noise of that small retraining. ``damping="auto"`` does the same by itself
where the calibration is cheap.

The record is in ``calibration_`` (every candidate's scores) and the verdict in
``fidelity_``: how well the fitted transformer predicts the retraining, with 95%
intervals. That is the number to quote next to the scores. This example then
checks it against an independent, larger retraining on held-out test rows.
Run it with ``OMP_NUM_THREADS=1 python examples/plot_calibration.py``.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_digits
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.evaluation import lds, predict_distributions, random_subsets, retrain_distributions
from skdtda.nets import MLP

torch.set_num_threads(1)

X, y = load_digits(return_X_y=True)
X = X / 16
X_train, y_train, X_test, y_test = X[:300], y[:300], X[300:340], y[300:340]
net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                          criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam,
                          lr=0.005, max_epochs=30, batch_size=32, train_split=None, verbose=0)
ens = SeedEnsembleClassifier(net, n_seeds=16, random_state=0).fit(X_train, y_train)

# %%
# Calibrate, and read the verdict
# -------------------------------
# 16 members and the default budget of 3 give 11 removal sets retrained with 4
# seeds (half remove 30% of the rows, half 5%); 40 training rows that no set
# removes are the queries.
influence = InfluenceTransformer(ens, damping="calibrate").fit(X_train, y_train)
table, fidelity = influence.calibration_, influence.fidelity_
print(f"curvature {influence.curvature_}; rule {table.rule:.3g}; calibrated damping "
      f"{influence.damping_:.3g} ({table.factor[table.chosen]:.2g} x the rule)")
# the gain over the rule's value, with its 95% interval (query rows and retrained seeds
# resampled): a candidate replaces the rule's value only where the interval is above 0
low, high = table.gain_interval[table.chosen]
print(f"gain over the rule: {table.gain[table.chosen]:+.3f} [{low:+.3f}, {high:+.3f}]"
      + ("; the guard kept the rule's value over a candidate that scored higher"
         if table.guarded else ""))
print(f"fidelity: LDS of the mean over 30% removals {fidelity.lds:.2f} "
      f"[{fidelity.interval[0]:.2f}, {fidelity.interval[1]:.2f}], correlation over 5% "
      f"removals {fidelity.small_sets:.2f} "
      f"[{fidelity.small_sets_interval[0]:.2f}, {fidelity.small_sets_interval[1]:.2f}]")
# the LDS as measured against the 4 retrained seeds, corrected for their noise (over
# their ceiling) and for that of the 8 members scored (times the members' factor):
# what all 16 members would show against a retraining with many seeds
print(f"  measured {fidelity.lds_measured:.2f}, / seeds' ceiling {fidelity.lds_ceiling:.2f}, "
      f"x members' factor {fidelity.lds_members_factor:.2f}")

# %%
# Every candidate's scores against the small retraining
# ------------------------------------------------------
fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
low, high = np.asarray(table.mean_interval).T
ax.fill_between(table.damping, low, high, alpha=0.2)
ax.plot(table.damping, table.mean, "o-", label="mean-LDS, 30% removals")
ax.plot(table.damping, table.small, "s-", label="correlation, 5% removals")
ax.plot(table.damping, table.variance, "^:", label="variance-LDS, 30% removals")
ax.axvline(table.rule, color="grey", ls="--", label="the rule ('auto')")
ax.axvline(influence.damping_, color="black", label="chosen")
ax.set(xscale="log", xlabel="damping", ylabel="agreement with the retraining",
       title="damping='calibrate': candidates around the rule")
ax.legend(fontsize=8)

# %%
# Checked against an independent retraining
# -----------------------------------------
# 32 other seeds, 12 other 30% removals, 40 test rows the members never saw. The
# calibration measured its LDS on training rows with 4 seeds (and corrected it for
# the noise of 4 seeds), so expect the same ballpark, not the same number.
remove = random_subsets(len(X_train), 12, keep_fraction=0.7, random_state=1)
truth = retrain_distributions(ens, X_train, y_train, X_test, y_test, remove=remove,
                              n_seeds=32, random_state=2)
predicted = predict_distributions(influence, X_test, y_test, remove=remove)
print(f"independent retraining: mean-LDS {lds(predicted, truth):.2f} at the calibrated "
      f"damping")
rule = InfluenceTransformer(ens, calibration_budget=0).fit(X_train, y_train)
print(f"                        mean-LDS "
      f"{lds(predict_distributions(rule, X_test, y_test, remove=remove), truth):.2f} at the "
      f"rule's {rule.damping_:.3g}")

# %%
# Calibrated on the rows you will ask about
# -----------------------------------------
# Which damping predicts best, and how well, depends on which rows are asked about.
# Where those rows are known (here the 40 test rows), give them to ``fit``: the
# calibration measures them instead of training rows held out of its retraining, and
# ``fidelity_`` is then about them (its intervals are the mean's confidence interval
# over these rows, not a prediction for other ones).
on_test = InfluenceTransformer(ens, damping="calibrate").fit(X_train, y_train,
                                                             X_query=X_test, y_query=y_test)
fidelity = on_test.fidelity_
print(f"calibrated on the test rows: damping {on_test.damping_:.3g}, fidelity "
      f"{fidelity.lds:.2f} [{fidelity.interval[0]:.2f}, {fidelity.interval[1]:.2f}]; the "
      f"independent retraining: "
      f"{lds(predict_distributions(on_test, X_test, y_test, remove=remove), truth):.2f}")
