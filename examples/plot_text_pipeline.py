"""
Which training documents drive this text classifier?
====================================================

A text classifier as scikit-learn users build it: a ``TfidfVectorizer`` in
front of a small network, in one ``Pipeline``. The network is a skorch net
trained under 8 seeds by :class:`~skdtda.SeedEnsembleClassifier`, and
:class:`~skdtda.InfluenceTransformer` takes the whole Pipeline:

- it fits the vectorizer on the training documents and holds it fixed while
  attributing, so every score belongs to one of the user's raw documents;
- the TF-IDF rows stay a sparse CSR matrix all the way (the nets see dense
  chunks of a few rows at a time, never the whole matrix).

The corpus is generated here, so that the example needs no download
(scikit-learn's 20 newsgroups would): four topics, each with its own words,
words that all topics share, now and then a word of another topic, and 5% of
the training documents given the label of another topic.

Every score is the predicted change of a measurement (here a document's loss)
when the training document is removed, already divided by the number of
training documents: positive means removing the document raises the loss, so
the document was helping.

Run it with ``OMP_NUM_THREADS=1 python examples/plot_text_pipeline.py``.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import make_pipeline
from skorch import NeuralNetClassifier

from skdtda import InfluenceTransformer, SeedEnsembleClassifier
from skdtda.evaluation import retrain_distributions
from skdtda.nets import MLP

torch.set_num_threads(1)

# %%
# A corpus of four topics
# -----------------------
# Each document draws 6 to 10 words from its topic, 4 to 8 from a shared pool,
# and with probability 0.3 two words of another topic. 20 of the 400 training
# documents then get a wrong label.
TOPICS = {
    "sport": "match goal team coach season league score player referee stadium penalty "
             "striker keeper tournament final trophy fans pitch injury transfer",
    "space": "orbit rocket planet moon launch telescope galaxy astronaut satellite comet "
             "nasa mars gravity star probe mission crater solar asteroid module",
    "cooking": "recipe oven flour butter garlic onion simmer bake sauce pepper salt dough "
               "roast kitchen chef spice pasta boil fry herbs",
    "computing": "code compiler server python bug kernel database memory laptop software "
                 "network cache thread script debug linux cloud algorithm disk cpu",
}
SHARED = ("new time year people good first last great week news report today long big "
          "best world day way story plan").split()
names = list(TOPICS)
vocabulary = {topic: words.split() for topic, words in TOPICS.items()}


def make_corpus(n_docs, rng):
    labels = rng.randint(len(names), size=n_docs)
    docs = []
    for label in labels:
        words = list(rng.choice(vocabulary[names[label]], rng.randint(6, 11)))
        words += list(rng.choice(SHARED, rng.randint(4, 9)))
        if rng.rand() < 0.3:
            other = rng.choice([t for t in range(len(names)) if t != label])
            words += list(rng.choice(vocabulary[names[other]], 2))
        docs.append(" ".join(rng.permutation(words)))
    return docs, labels


rng = np.random.RandomState(0)
docs_train, y_clean = make_corpus(400, rng)
docs_test, y_test = make_corpus(100, rng)
wrong = rng.choice(len(docs_train), 20, replace=False)
y_train = y_clean.copy()
y_train[wrong] = (y_clean[wrong] + rng.randint(1, len(names), size=len(wrong))) % len(names)
print(f"{len(docs_train)} training documents, {len(wrong)} with a wrong label; e.g.")
for i in range(3):
    print(f"  [{names[y_train[i]]}] {docs_train[i]}")

# %%
# A Pipeline: TF-IDF, then 8 seeds of a small network
# ---------------------------------------------------
net = NeuralNetClassifier(MLP, module__hidden_layer_sizes=(16,),
                          criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.SGD,
                          optimizer__momentum=0.9, lr=0.05, max_epochs=30, batch_size=32,
                          train_split=None, verbose=0)
model = make_pipeline(TfidfVectorizer(), SeedEnsembleClassifier(net, n_seeds=8, random_state=0))
model.fit(docs_train, y_train)
features = model[0].transform(docs_train)
print(f"TF-IDF: {features.shape[1]} words, {type(features).__name__} with "
      f"{features.nnz / np.prod(features.shape):.0%} of its entries stored")
print(f"test accuracy {model.score(docs_test, y_test):.3f}")

# The fitted Pipeline is adopted as it is: the vectorizer is held fixed and
# the 8 members are attributed.
influence = InfluenceTransformer(model).fit(docs_train, y_train)
assert sparse.issparse(influence.preprocessor_.transform(docs_test[:2]))
print(f"curvature: {influence.curvature_!r}")

# %%
# Helpful and harmful documents for one test document
# ---------------------------------------------------
# A test document that mixes two topics: its loss under its true label is
# what the scores are about. ``influence_samples`` gives each seed's
# predicted change; their mean over seeds ranks the training documents.
query = ["rocket launch orbit moon plan kitchen oven people news"]
y_query = np.array([names.index("space")])
scores = influence.influence_samples(query, y_query).mean(axis=0)[0]  # (n_train,)
proba = model.predict_proba(query)[0]
print(f"query: {query[0]!r}, label space; the ensemble gives it "
      + ", ".join(f"{names[k]} {p:.2f}" for k, p in enumerate(proba)))


def show(rows, values, title):
    print(title)
    for k in rows:
        flag = "  <- wrong label" if k in wrong else ""
        print(f"  {values[k]:+.4f}  #{k} [{names[y_train[k]]}] {docs_train[k]}{flag}")


show(np.argsort(-scores)[:5], scores, "most helpful (removing them raises the query's loss):")
show(np.argsort(scores)[:5], scores, "most harmful (removing them lowers it):")

# %%
# The ensemble calls this space document cooking. The most helpful documents
# are space documents that share its words; the five most harmful all carry a
# wrong label (two are space documents labelled cooking or computing). Does
# removing those five really lower the query's loss? Retraining the whole
# Pipeline without them (vectorizer included) under 8 new seeds, against the
# first-order prediction of the 8 attributed seeds:
harmful = np.argsort(scores)[:5]
predicted = influence.predict_removal(query, y_query, remove=harmful)[:, 0]
truth = retrain_distributions(model, docs_train, y_train, query, y_query, remove=[harmful])
print(f"query loss, mean over seeds: {influence.measure(query, y_query).mean():.2f} "
      f"-> predicted {predicted.mean():.2f} without the 5; retrained "
      f"{truth.before.mean():.2f} -> {truth.after.mean():.2f}")

# %%
# Retraining confirms the direction and shows a larger drop than predicted:
# five documents that each move the query this much are far from the small
# removals that a first-order prediction describes. The ranking is what the
# scores are for here.

# %%
# Documents with a wrong label stand out by self-influence
# --------------------------------------------------------
# A document's self-influence is the predicted change of its own loss when it
# is left out. A document whose label disagrees with its words is fitted only
# because it is in the training set, so leaving it out raises its loss most.
# ``DataPruner(objective="self")`` removes the documents with the highest
# self-influence first; here it is read from the same fitted influence, one
# block of documents at a time.
self_influence = np.empty(len(docs_train))
for start in range(0, len(docs_train), 100):
    rows = np.arange(start, min(start + 100, len(docs_train)))
    block = influence.influence_samples([docs_train[k] for k in rows], y_train[rows])
    self_influence[rows] = block.mean(axis=0)[np.arange(len(rows)), rows]
order = np.argsort(-self_influence)
found = np.cumsum(np.isin(order, wrong))
print(f"wrong labels among the 20 documents of highest self-influence: {found[19]} of 20; "
      f"among the top 40: {found[39]}")
show(order[:5], self_influence, "highest self-influence:")

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
top = np.r_[np.argsort(-scores)[:8], np.argsort(scores)[:8][::-1]]
colors = ["tab:red" if k in wrong else "tab:blue" for k in top]
axes[0].barh(np.arange(len(top)), scores[top], color=colors)
axes[0].set_yticks(np.arange(len(top)), [f"#{k} [{names[y_train[k]]}]" for k in top],
                   fontsize=7)
axes[0].invert_yaxis()
axes[0].axvline(0, color="gray", lw=0.5)
axes[0].set(xlabel="predicted change of the query's loss when removed",
            title="8 most helpful and harmful documents\n(red: wrong label)")
n = np.arange(1, 101)  # the first quarter of the ranking; all 20 are found there
axes[1].plot(n, found[:100], label="ranked by self-influence")
axes[1].plot(n, n * len(wrong) / len(order), "--", color="gray", label="random order")
axes[1].axhline(len(wrong), color="gray", lw=0.5)
axes[1].set(xlabel="documents inspected, highest self-influence first",
            ylabel="wrong labels found", title=f"finding the {len(wrong)} wrong labels")
axes[1].legend()
plt.show()
