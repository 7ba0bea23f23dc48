"""Seed ensembles: one skorch net trained under many random seeds.

Training a neural net is random, so one dataset gives a distribution over
trained nets. A seed ensemble draws samples from it: member ``i`` is a clone of
the user's skorch net trained with its own initialisation seed and its own
minibatch-order seed. Measurements over the members (``measure``) are samples
of the distribution that distributional training data attribution studies.
"""

import logging
import warnings
from collections.abc import Mapping
from numbers import Integral

import joblib
import numpy as np
import skorch
import torch
from joblib import effective_n_jobs
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_array, check_is_fitted, check_memory
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from .._cache import settings_key
from .._inputs import n_rows, take_rows
from .._loops import chunks, progress
from ..exceptions import UNDERTRAINED_GAIN, TrainingDivergedError, UndertrainedWarning
from ..measurements import get_measurement
from ..model import is_deterministic
from ..nets import MLP
from . import _batched, _sklearn
from ._fingerprint import fingerprint
from ._rows import check_rows, net_form, rows_as_given, uses_token_ids

__all__ = ["SeedEnsembleClassifier", "SeedEnsembleRegressor", "initialize_member"]

#: Rows per forward pass when the members evaluate one array (``_member_outputs``).
_EVAL_CHUNK = 4096

logger = logging.getLogger("skdtda")

_SEED_MAX = np.iinfo(np.int32).max

# With memory=, the batched path trains and stores the members in groups of
# this many, so an interrupted fit loses at most one group's work. The groups
# depend on nothing but n_seeds (not on n_jobs or on what is already stored):
# a batched member's last bits depend on which members share its pass, and a
# resumed fit must equal an uninterrupted one bit for bit.
_MEMORY_GROUP_SIZE = 4


def _rng_devices(device):
    # fork_rng forks the CPU generator always; accelerator generators only when used.
    return [] if torch.device(device).type == "cpu" else None


def initialize_member(member, init_seed):
    """Initialise the skorch net ``member`` under ``torch.manual_seed(init_seed)``,
    leaving torch's global random state as it was; returns it."""
    with torch.random.fork_rng(devices=_rng_devices(member.device)):
        torch.manual_seed(int(init_seed))
        member.initialize()
    return member


def _fit_member(member, X, y, init_seed, key=None):
    """Train one member as a plain ``net.fit`` would, under its init seed.

    ``key`` stands for all the arguments when ``memory=`` caches the call
    (joblib then hashes the key, not the net and the data).
    """
    with torch.random.fork_rng(devices=_rng_devices(member.device)):
        torch.manual_seed(int(init_seed))
        member.fit(X, y)
    return member


def _fit_members_batched(members, X, y, init_seeds, verbose, key=None):
    for member, seed in zip(members, init_seeds):
        initialize_member(member, seed)
    with progress(members[0].max_epochs, f"training {len(members)} seeds (batched)", "epoch",
                  verbose) as bar:
        def epoch_done(epoch, loss):
            logger.debug("batched epoch %d: mean train loss %.4g", epoch + 1, loss)
            bar.set_postfix(loss=f"{loss:.4g}")
            bar.update()

        _batched.fit_batched(members, X, y, progress=epoch_done)
    return members


#: The most members one batched pass of :func:`fit_row_sets` trains together.
ROW_SETS_MEMBERS = 64


def fit_row_sets(template, X, y, keeps):
    """Yield ``(j, clone(template).fit(take_rows(X, keeps[j]), y[keeps[j]]))`` for every
    row mask ``keeps[j]``, in the order they finish, training the members of sets that
    keep as many rows together: one batched pass of up to :data:`ROW_SETS_MEMBERS`
    members, each member on its own rows with its own initialisation and order.

    A retraining of many small ensembles (the calibration's 4 seeds per removal set)
    is dominated by each training step's fixed cost, which one pass over the members
    of several sets shares. A set whose fit takes another path (a scikit-learn model,
    the loop, ``memory=``, ``n_jobs``, input other than one array) is fitted alone,
    as are sets of more than half :data:`ROW_SETS_MEMBERS` seeds.
    """
    y = np.asarray(y)
    groups = {}
    for j, keep in enumerate(keeps):
        ens = clone(template)
        X_kept, y_kept = take_rows(X, keep), y[keep]
        if (_sklearn.is_sklearn_model(ens.net) or ens.memory is not None
                or effective_n_jobs(ens.n_jobs or 1) != 1
                or 2 * ens.n_seeds > ROW_SETS_MEMBERS):
            yield j, ens.fit(X_kept, y_kept)
            continue
        ens._validate_params()
        X_kept, y_kept = ens._fit_input(X_kept, y_kept)
        ens._draw_seeds()
        ens._torch_cache = None
        net_template, X_net, y_net, members = ens._prepare_members(X_kept, y_kept)
        if not (ens.vectorized_ and isinstance(X_net, np.ndarray)):
            yield j, ens._finish(ens._fit_members(net_template, X_net, y_net, members, 1),
                                 X_net, y_net)
            continue
        groups.setdefault(n_rows(X_net), []).append((j, ens, X_net, y_net, members))
    for n, entries in groups.items():
        per_pass = ROW_SETS_MEMBERS // len(entries[0][4])
        for start in range(0, len(entries), per_pass):
            part = entries[start:start + per_pass]
            members = [m for *_, ms in part for m in ms]
            for member, seed in zip(members, np.concatenate([e[1].init_seeds_ for e in part])):
                initialize_member(member, seed)
            # set k's rows sit at k n .. (k + 1) n of the concatenated rows
            rows = torch.cat([torch.arange(k * n, (k + 1) * n).expand(len(ms), n)
                              for k, (*_, ms) in enumerate(part)])
            _batched.fit_batched(members, np.concatenate([e[2] for e in part]),
                                 np.concatenate([e[3] for e in part]), rows=rows)
            for j, ens, X_net, y_net, ms in part:
                yield j, ens._finish(ms, X_net, y_net)


def _member_losses(member):
    return np.asarray(member.history[:, "train_loss"], dtype=float) if len(member.history) \
        else np.array([])


class _BaseSeedEnsemble(BaseEstimator):
    """Shared machinery of the classifier and regressor ensembles."""

    _parameter_constraints = {
        "n_seeds": [Interval(Integral, 1, None, closed="left")],
        "vary": [StrOptions({"both", "init", "order"})],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
        "vectorize": ["boolean", StrOptions({"auto"})],
        "memory": [None, str, HasMethods(["cache"])],
        "verbose": ["verbose"],
    }

    def __init__(self, net=None, *, n_seeds=16, vary="both", random_state=None, n_jobs=None,
                 vectorize="auto", memory=None, verbose=0):
        self.net = net
        self.n_seeds = n_seeds
        self.vary = vary
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.vectorize = vectorize
        self.memory = memory
        self.verbose = verbose

    # -- hooks for the two subclasses -------------------------------------------------
    def _default_net(self):
        raise NotImplementedError

    def _net_targets(self, y):
        """Targets in the form the member nets train on."""
        raise NotImplementedError

    def _query_targets(self, X, y):
        """Query targets for ``measure``; the ensemble's prediction when y is None."""
        raise NotImplementedError

    # -- fitting ------------------------------------------------------------------------
    def _make_template(self, n_outputs):
        net = self._default_net() if self.net is None else clone(self.net)
        module = net.module
        if isinstance(module, type) and issubclass(module, MLP):
            # The default module learns its sizes from the data.
            params = net.get_params_for("module")
            missing = {}
            if params.get("n_features") is None:
                missing["module__n_features"] = self.n_features_in_
            if params.get("n_outputs") is None:
                missing["module__n_outputs"] = n_outputs
            net.set_params(**missing)
        # Every member shuffles, each with its own generator (set per member).
        return net.set_params(iterator_train__shuffle=True)

    def _draw_seeds(self):
        rng = check_random_state(self.random_state)
        self.seeds_ = rng.randint(_SEED_MAX, size=self.n_seeds)
        shared_init, shared_order = rng.randint(_SEED_MAX, size=2)
        order_of_own = np.array(
            [np.random.SeedSequence([int(s), 1]).generate_state(1)[0] % _SEED_MAX
             for s in self.seeds_], dtype=np.int64)
        self.init_seeds_ = (self.seeds_ if self.vary in ("both", "init")
                            else np.full(self.n_seeds, shared_init))
        self.order_seeds_ = (order_of_own if self.vary in ("both", "order")
                             else np.full(self.n_seeds, shared_order))

    def _member(self, template, i):
        generator = torch.Generator().manual_seed(int(self.order_seeds_[i]))
        return clone(template).set_params(iterator_train__generator=generator)

    def _use_batched(self, probe, X, y):
        if self.vectorize is False:
            return False
        reason = _batched.unsupported_reason(probe) or _batched.check_vmappable(probe, X, y)
        if reason is None:
            return True
        if self.vectorize is True:
            raise ValueError(f"vectorize=True, but the batched path cannot train this net: "
                             f"{reason}. Use vectorize='auto' to fall back to the loop.")
        logger.info("training the seeds one by one (loop): %s", reason)
        return False

    def _fit(self, X, y):
        self._draw_seeds()
        self._torch_cache = None
        if _sklearn.is_sklearn_model(self.net):
            return self._fit_sklearn(X, y)
        template, X, y, members = self._prepare_members(X, y)
        n_jobs = 1 if self.n_jobs is None else self.n_jobs
        return self._finish(self._fit_members(template, X, y, members, n_jobs), X, y)

    def _prepare_members(self, X, y):
        """Everything of a fit before training: the template net, the rows and targets
        in the nets' form, and the unfitted members (``vectorized_`` set)."""
        n_outputs = self._n_net_outputs
        template = self._make_template(n_outputs)
        probe = initialize_member(self._member(template, 0), self.init_seeds_[0])
        self._dtype = next(probe.module_.parameters()).dtype
        self._token_ids = uses_token_ids(probe.module_)
        X = self._net_form(X)
        y = self._net_targets(y)
        self.training_fingerprint_ = fingerprint(X, y)
        _check_outputs_suit_criterion(probe, X)
        members = [self._member(template, i) for i in range(self.n_seeds)]
        self.vectorized_ = self._use_batched(probe, X, y)
        return template, X, y, members

    def _finish(self, fitted, X, y):
        self._check_members(fitted)
        self.estimators_ = fitted
        self._warn_if_undertrained(X, y)
        return self

    def _fit_members(self, template, X, y, members, n_jobs):
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        fit_member, fit_group = _fit_member, _fit_members_batched
        if self.memory is not None:
            memory = check_memory(self.memory)
            fit_member = memory.cache(_fit_member, ignore=["member", "X", "y", "init_seed"])
            fit_group = memory.cache(_fit_members_batched,
                                     ignore=["members", "X", "y", "init_seeds", "verbose"])
        if self.vectorized_:
            if self.memory is None:
                n_groups = min(self.n_seeds, effective_n_jobs(n_jobs))
                groups = np.array_split(np.arange(self.n_seeds), n_groups)
            else:
                groups = [np.arange(self.n_seeds)[part]
                          for part in chunks(self.n_seeds, _MEMORY_GROUP_SIZE)]
            calls = [([members[i] for i in g], X, y, self.init_seeds_[g], self.verbose)
                     for g in groups]
            keys = self._memory_keys(template, groups, "batched")
            self._log_stored(fit_group, calls, keys, groups)
            results = parallel(delayed(fit_group)(*args, key=key)
                               for args, key in zip(calls, keys))
            fitted = [m for group in results for m in group]
        else:
            singles = [np.array([i]) for i in range(self.n_seeds)]
            calls = [(m, X, y, s) for m, s in zip(members, self.init_seeds_)]
            keys = self._memory_keys(template, singles, "loop")
            self._log_stored(fit_member, calls, keys, singles)
            fitted = self._fit_each(fit_member, calls, keys, n_jobs, _last_loss)
        return fitted

    def _fit_sklearn(self, X, y):
        """Members are clones of a scikit-learn model, each with its own random_state,
        trained by scikit-learn itself (joblib over members)."""
        _sklearn.check_model(self.net, self.vary)
        if is_deterministic(self.net):
            if self.n_seeds != 1:
                logger.info("%s fits deterministically: the ensemble has one member "
                            "(n_seeds=%d ignored)", type(self.net).__name__, self.n_seeds)
            self.seeds_ = self.seeds_[:1]
        # one random_state draws both the initialisation and the shuffling
        self.init_seeds_ = self.order_seeds_ = self.seeds_
        self._dtype = torch.float64
        self.vectorized_ = False
        self._token_ids = False
        if isinstance(X, Mapping):
            raise ValueError(f"{type(self.net).__name__} takes one array, not a dict of arrays "
                             "(several forward arguments are for skorch nets)")
        X = self._net_form(X)
        y_net = self._net_targets(y)
        self.training_fingerprint_ = fingerprint(X, y_net)
        y_fit = y_net.reshape(-1) if self._task == "classifier" or self._y_ndim == 1 else y_net
        template = clone(self.net)
        has_seed = "random_state" in template.get_params()
        members = [clone(template).set_params(random_state=int(seed)) if has_seed
                   else clone(template) for seed in self.seeds_]
        fit = _sklearn.fit_member
        if self.memory is not None:
            fit = check_memory(self.memory).cache(_sklearn.fit_member,
                                                  ignore=["estimator", "X", "y"])
        singles = [np.array([i]) for i in range(len(members))]
        keys = self._memory_keys(template, singles, "sklearn")
        calls = [(m, X, y_fit) for m in members]
        self._log_stored(fit, calls, keys, singles)
        fitted = self._fit_each(fit, calls, keys, 1 if self.n_jobs is None else self.n_jobs)
        for i, member in enumerate(fitted):
            reason = _sklearn.check_fitted_member(member)
            if reason is not None:
                raise TrainingDivergedError(
                    f"ensemble member {i} (random_state={self.seeds_[i]}) diverged: {reason}. "
                    "Lower the learning rate or scale the features.")
        self.estimators_ = fitted
        return self

    def _fit_each(self, fit, calls, keys, n_jobs, shown_loss=None):
        """``fit(*call, key=key)`` for every member through joblib, in order, with a
        progress bar over members (``shown_loss(member)``: the loss it shows)."""
        fitted = []
        with progress(len(calls), "training seeds", "seed", self.verbose) as bar:
            for member in Parallel(n_jobs=n_jobs, return_as="generator")(
                    delayed(fit)(*args, key=key) for args, key in zip(calls, keys)):
                fitted.append(member)
                if shown_loss is not None:
                    bar.set_postfix(loss=shown_loss(member))
                bar.update()
        return fitted

    def _torch_members(self):
        """The members as skorch nets: themselves, or, for scikit-learn members, the
        torch functions they compute (built once, see ``_sklearn.torch_member``)."""
        if not _sklearn.is_sklearn_model(self.estimators_[0]):
            return self.estimators_
        cache = getattr(self, "_torch_cache", None)
        if cache is None or cache[0] is not self.estimators_:
            nets = [_sklearn.torch_member(m, self.training_fingerprint_.n_samples,
                                          self._task == "classifier")
                    for m in self.estimators_]
            self._torch_cache = cache = (self.estimators_, nets)
        return cache[1]

    def _memory_keys(self, template, groups, path):
        """One key per unit of work stored by ``memory=``: what determines its members.

        The net's settings (``get_params``, with the module class), the
        members' positions and seeds, ``vary``, the nets' dtype, the training
        data's fingerprint, the training path (a batched member differs from
        its loop twin in the last bits) and the library versions.
        """
        if self.memory is None:
            return [None] * len(groups)
        from .. import __version__

        import sklearn

        shared = (type(self).__name__, type(template).__name__, settings_key(template), path,
                  self.vary, str(self._dtype), self.training_fingerprint_.key(), __version__,
                  torch.__version__, skorch.__version__, sklearn.__version__)
        return [joblib.hash((shared, [(int(i), int(self.init_seeds_[i]),
                                       int(self.order_seeds_[i])) for i in g]))
                for g in groups]

    def _log_stored(self, cached, calls, keys, groups):
        if self.memory is None or not hasattr(cached, "check_call_in_cache"):
            return
        stored = sum(len(g) for args, key, g in zip(calls, keys, groups)
                     if cached.check_call_in_cache(*args, key=key))
        if stored:
            logger.info("%s: %d of %d members loaded from memory, training the rest",
                        type(self).__name__, stored, self.n_seeds)

    def _check_members(self, members):
        for i, member in enumerate(members):
            losses = _member_losses(member)
            bad = np.flatnonzero(~np.isfinite(losses))
            finite_params = all(torch.isfinite(p).all() for p in member.module_.parameters())
            if len(bad) or not finite_params:
                where = (f"its training loss became {losses[bad[0]]} in epoch {bad[0] + 1}"
                         if len(bad) else "its parameters are no longer finite")
                raise TrainingDivergedError(
                    f"ensemble member {i} (init seed {self.init_seeds_[i]}, order seed "
                    f"{self.order_seeds_[i]}) diverged: {where}. Lower the learning rate "
                    "or scale the features.")

    def _warn_if_undertrained(self, X, y):
        """Warn (:class:`~skdtda.UndertrainedWarning`) where a member's training removed
        less than ``UNDERTRAINED_GAIN`` of the training loss of the best constant
        prediction: the members' log-loss against the entropy of the class frequencies,
        or their mean squared error against the targets' variance, whatever criterion
        they trained with (one forward pass of the training rows per member)."""
        constant, what = self._constant_loss(y)
        if not constant > 0:  # a constant target: nothing to learn
            return
        # skorch's data loaders draw a seed from torch's global generator
        with torch.no_grad(), torch.random.fork_rng(
                devices=_rng_devices(self.estimators_[0].device)):
            losses = np.array([self._training_loss(member, out, y) for member, out
                               in zip(self.estimators_, self._member_outputs(X))])
        gain = 1 - losses / constant
        low = np.flatnonzero(~(gain >= UNDERTRAINED_GAIN))
        if not len(low):
            return
        span = (f"{losses[low].min():.4g}" if len(low) == 1
                else f"{losses[low].min():.4g} to {losses[low].max():.4g}")
        warnings.warn(
            f"{len(low)} of {len(losses)} members barely trained (members {low[:8].tolist()}"
            f"{', ...' if len(low) > 8 else ''}): their training removed under "
            f"{100 * UNDERTRAINED_GAIN:.0f}% of the loss of the best constant prediction, "
            f"with a training {what} of {span} against {constant:.4g} for that constant. "
            "Attributing such members describes their initialisation, not what they "
            "learned: train longer, with a larger learning rate or another optimizer (see "
            "each member's history), unless the targets really are this unpredictable.",
            UndertrainedWarning, stacklevel=6)  # the caller of fit

    # -- prediction helpers -------------------------------------------------------------
    def _validate_X(self, X):
        check_is_fitted(self)
        return self._net_form(check_rows(self, X, reset=False)[0])

    def _net_form(self, X):
        """Validated rows in the nets' form (see :func:`._rows.net_form`)."""
        return net_form(X, _numpy_dtype(self._dtype), getattr(self, "_token_ids", False))

    def _rows_as_given(self, X, y):
        """The user's rows with a Dataset read and a dict checked (for the fingerprint
        check, which converts the rest itself)."""
        X, y = rows_as_given(X, y)
        if not isinstance(X, Mapping) and not sparse.issparse(X):
            X = check_array(X, dtype=None, ensure_2d=False, ensure_all_finite=False,
                            allow_nd=True, ensure_min_samples=0, ensure_min_features=0)
            if getattr(self, "_token_ids", False) and np.issubdtype(X.dtype, np.integer):
                X = X.astype(np.int64)
        return X, y

    def _member_outputs(self, X):
        """Each member's raw module output on X, as torch tensors on the CPU.

        Rows that are one numeric array go to each net in chunks of
        ``_EVAL_CHUNK`` rows through skorch's own evaluation step, without its
        data loader, whose per-row indexing and collation took most of such a
        pass for small nets (7.4 of 9.4 s in a profile); other forms (dicts,
        Datasets, sparse matrices) go through the loader."""
        members = self._torch_members()
        if not (isinstance(X, np.ndarray) and X.dtype.kind in "biuf" and len(X)):
            return [member.forward(X, training=False) for member in members]
        outputs = []
        for member in members:
            parts = [member.evaluation_step((torch.as_tensor(X[rows]).to(member.device), None),
                                            training=False)
                     for rows in chunks(len(X), _EVAL_CHUNK)]
            if isinstance(parts[0], tuple):  # several outputs: skorch's forward joins them
                outputs.append(member.forward(X, training=False))
            else:
                outputs.append(torch.cat([p.detach().cpu() for p in parts]))
        return outputs

    def measure(self, X, y=None, measurement="loss"):
        """Distribution over seeds of a per-sample measurement.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query inputs.
        y : array-like of shape (n_samples,), default=None
            Query targets. When None, the ensemble's own prediction is used
            (its predicted class, or its mean regression output).
        measurement : str or callable, default="loss"
            ``"loss"`` (the net's criterion, per sample), ``"margin"``
            (log-probability of the class minus the largest other one, which
            equals the logit margin for softmax nets), ``"log_proba"``,
            ``"proba"`` (of the given or predicted class), ``"prediction"``
            (regression output), or a callable ``(net, X, y) -> array of shape
            (n_samples,)`` called once per member with the member's own target
            encoding (class indices for classifiers).

        Returns
        -------
        values : ndarray of shape (n_seeds, n_samples)
            ``values[s, i]`` is the measurement of query ``i`` under member ``s``.
        """
        X = self._validate_X(X)
        y_net = self._query_targets(X, y)
        if callable(measurement):
            values = [np.asarray(measurement(m, X, y_net), dtype=float).reshape(n_rows(X))
                      for m in self.estimators_]
            return np.stack(values)
        fn = get_measurement(measurement, self._task)
        y_t = torch.as_tensor(y_net)
        with torch.no_grad():
            values = [fn(m, out, y_t).cpu().numpy() for m, out
                      in zip(self._torch_members(), self._member_outputs(X))]
        return np.stack(values).astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.sparse = True  # kept as CSR, densified a minibatch at a time
        return tags


def _last_loss(member):
    losses = _member_losses(member)
    return f"{losses[-1]:.4g}" if len(losses) else "n/a"


def _numpy_dtype(torch_dtype):
    return torch.empty((), dtype=torch_dtype).numpy().dtype


def _check_outputs_suit_criterion(net, X):
    """Refuse a classifier whose module returns logits to skorch's default NLLLoss.

    skorch's ``NeuralNetClassifier`` trains with ``NLLLoss`` by default and
    takes the log of the module's output itself, so it needs probabilities.
    Logits (or log-probabilities) give the log of negative numbers and a
    training loss of NaN, which would otherwise be reported as divergence.
    """
    if (not isinstance(net, NeuralNetClassifier) or not isinstance(net.criterion_, nn.NLLLoss)
            or type(net).get_loss is not NeuralNetClassifier.get_loss):
        return
    with torch.random.fork_rng(devices=_rng_devices(net.device)), torch.no_grad():
        out = net.forward(take_rows(X, slice(0, 16)), training=False)
    if not torch.is_tensor(out) or out.ndim != 2 or not out.is_floating_point():
        return
    out = out.double()
    tol = 1e-3
    if (out >= -tol).all() and ((out.sum(dim=1) - 1).abs() <= tol).all():
        return
    if (out <= tol).all() and ((out.exp().sum(dim=1) - 1).abs() <= tol).all():
        raise ValueError(
            "the net's criterion is NLLLoss, and its module returns log-probabilities; "
            "skorch's NeuralNetClassifier takes the log of the output itself for NLLLoss, so "
            "it needs probabilities. End the module with a softmax instead of a log-softmax, "
            "or pass criterion=torch.nn.CrossEntropyLoss to the net")
    low, high = float(out.min()), float(out.sum(dim=1).max())
    raise ValueError(
        f"the net's criterion is NLLLoss (skorch's NeuralNetClassifier default), which needs "
        f"the module to return class probabilities, but on the first training rows it returns "
        f"values that are not probabilities (smallest {low:.3g}, largest row sum {high:.3g}): "
        "they look like logits, which would train to a NaN loss. Pass "
        "criterion=torch.nn.CrossEntropyLoss to the net (it takes logits), or end the module "
        "with a softmax")


_NET_DOC = """
    Parameters
    ----------
    net : {net_class}, {sklearn_models} or None, default=None
        Unfitted skorch net; each member is a clone of it. ``train_split=None``
        is recommended for attribution, so that every member trains on all
        rows. When the module is :class:`skdtda.nets.MLP`, its ``n_features``
        and ``n_outputs`` are filled in from the data. None gives a small MLP
        ({default_net}). One of scikit-learn's own models (unfitted) instead:
        each member is a clone with its own ``random_state`` (the model's own
        is replaced), trained by scikit-learn; the deterministic ones
        ({deterministic}) make a one-member ensemble, whatever ``n_seeds``.
        See docs/sklearn.md.
    n_seeds : int, default=16
        Number of members, i.e. samples from the distribution of trained nets.
    vary : {{"both", "init", "order"}}, default="both"
        Which source of randomness differs between members: the
        initialisation, the minibatch order, or both. The other one is shared
        by all members. scikit-learn's models draw both from one
        ``random_state``, so they take only "both".
    random_state : int, RandomState instance or None, default=None
        Draws the member seeds. The same value gives the same ensemble, bit for
        bit on the CPU.
    n_jobs : int, default=None
        Number of joblib jobs over members (or, on the batched path, over
        groups of members). None means 1; it runs on whatever joblib backend
        is active, e.g. ``joblib.parallel_config(backend="dask")``.
    vectorize : "auto" or bool, default="auto"
        Train all members at once in a batched pass (``torch.func.vmap``) when
        the net allows it: a module of pure layers (Linear, convolutions,
        activations), an elementwise optimizer (SGD, Adam, AdamW, RMSprop,
        Adagrad), no callbacks and no internal validation split. It runs the
        same algorithm as the loop; "auto" falls back to the loop, logging why,
        and True raises if it cannot be used.
    memory : str, joblib.Memory or None, default=None
        Keeps each finished member on disk (a folder path or a
        :class:`joblib.Memory`), so that an interrupted fit started again
        with the same settings loads the finished members and trains only the
        rest. The loop path stores every member as it finishes; the batched
        path trains and stores groups of {group} members. Stored members are keyed
        by a hash of everything that determines them (the net's settings and
        module class, the member seeds, ``vary``, the nets' dtype, the
        training data's fingerprint, the library versions), so a store
        written by other settings or other data is never used. Written
        atomically: a killed fit never leaves a half-written member. A resumed
        fit equals an uninterrupted one with ``memory`` bit for bit; on the
        batched path, groups of {group} can differ from the one pass of
        ``memory=None`` in the last bits (as other ``n_jobs`` can).
    verbose : int, default=0
        0 is silent; 1 shows a progress bar (members or epochs, with the
        training loss); 2 keeps it on screen afterwards.

    Attributes
    ----------
    estimators_ : list of {net_class} or of the scikit-learn model
        The fitted members, each usable on its own (class indices as labels).
    seeds_ : ndarray of shape (n_seeds,)
        The seed drawn for each member.
    init_seeds_ : ndarray of shape (n_seeds,)
        Seed of each member's initialisation (``torch.manual_seed``).
    order_seeds_ : ndarray of shape (n_seeds,)
        Seed of each member's minibatch-order ``torch.Generator``.
    vectorized_ : bool
        Whether the batched path trained the members.
    training_fingerprint_ : TrainingFingerprint
        Shape, dtype and hashes of the training data as the members saw them
        (``X`` in the nets' dtype, ``y`` in their target encoding). Consumers
        of the fitted ensemble (:class:`~skdtda.InfluenceTransformer`,
        :class:`~skdtda.UnrolledInfluence`,
        :func:`~skdtda.evaluation.retrain_distributions`) check the rows they
        are given against it (see
        :func:`~skdtda.ensemble.check_same_training_data`).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit, when X has string column names."""


class SeedEnsembleClassifier(ClassifierMixin, _BaseSeedEnsemble):
    __doc__ = """Seed ensemble of a skorch classifier: samples of the trained-net distribution.
{params}
    classes_ : ndarray of shape (n_classes,)
        Class labels.

    See Also
    --------
    SeedEnsembleRegressor : The same for regression.

    Notes
    -----
    Member ``i`` equals a plain ``net.fit(X, y)`` run after
    ``torch.manual_seed(init_seeds_[i])`` with
    ``iterator_train__shuffle=True`` and
    ``iterator_train__generator=torch.Generator().manual_seed(order_seeds_[i])``.
    Fitting never changes torch's global random state or thread settings.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skdtda import SeedEnsembleClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> ens = SeedEnsembleClassifier(n_seeds=4, random_state=0).fit(X, y)
    >>> ens.measure(X[:5], y[:5]).shape
    (4, 5)
    >>> ens.predict_proba(X[:2]).shape
    (2, 3)

    With ``memory``, an interrupted fit resumes where it stopped:

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> first = SeedEnsembleClassifier(n_seeds=2, random_state=0, memory=folder).fit(X, y)
    >>> again = SeedEnsembleClassifier(n_seeds=2, random_state=0, memory=folder).fit(X, y)
    >>> bool((first.predict_proba(X) == again.predict_proba(X)).all())
    True
    >>> import shutil
    >>> shutil.rmtree(folder)
    """.format(params=_NET_DOC.format(group=_MEMORY_GROUP_SIZE,
                                      net_class="skorch.NeuralNetClassifier",
                                      sklearn_models="MLPClassifier, SGDClassifier, "
                                      "LogisticRegression",
                                      deterministic="LogisticRegression",
                                      default_net="one hidden layer of 32 units, SGD "
                                      "with momentum, 30 epochs"))

    _task = "classifier"
    _parameter_constraints = {
        **_BaseSeedEnsemble._parameter_constraints,
        "net": [NeuralNetClassifier, *_sklearn.CLASSIFIERS, None],
    }

    def _default_net(self):
        return NeuralNetClassifier(
            MLP, module__hidden_layer_sizes=(32,), criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.05, max_epochs=30,
            batch_size=32, train_split=None, verbose=0)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train every member on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Class labels (any hashable type).

        Returns
        -------
        self : SeedEnsembleClassifier
            The fitted ensemble.
        """
        return self._fit(*self._fit_input(X, y))

    def _fit_input(self, X, y):
        """Fit's checks of its rows and labels (the label encoding set)."""
        X, y = check_rows(self, X, y, reset=True)
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        self.classes_ = self._label_encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                f"SeedEnsembleClassifier needs samples of at least 2 classes in the "
                f"data, but the data contain only one class: {self.classes_.tolist()[0]!r}")
        self._n_net_outputs = len(self.classes_)
        return X, y

    def _net_targets(self, y):
        return self._label_encoder.transform(y).astype(np.int64)

    @staticmethod
    def _constant_loss(y):
        share = np.bincount(np.asarray(y).reshape(-1)) / np.size(y)
        share = share[share > 0]
        return float(-np.sum(share * np.log(share))), "log-loss"

    @staticmethod
    def _training_loss(member, out, y):
        log_proba = get_measurement("log_proba", "classifier")(member, out, torch.as_tensor(y))
        return -float(log_proba.double().mean())

    def _query_targets(self, X, y):
        if y is None:
            return self._predict_index(X)
        y = np.asarray(y).reshape(-1)
        if len(y) != n_rows(X):
            raise ValueError(f"y has {len(y)} samples but X has {n_rows(X)}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y contains labels not seen in fit: {unknown[:5].tolist()}")
        return self._net_targets(y)

    def _member_proba(self, X):
        probas = []
        for member in self.estimators_:
            proba = member.predict_proba(X)
            seen = getattr(member, "classes_", None)
            if seen is not None and proba.shape[1] == len(seen) != len(self.classes_):
                # a scikit-learn member fitted without some class (rows removed)
                full = np.zeros((n_rows(X), len(self.classes_)), dtype=proba.dtype)
                full[:, np.asarray(seen, dtype=int)] = proba
                proba = full
            probas.append(proba)
        return np.stack(probas)

    def _predict_index(self, X):
        return self._member_proba(X).mean(axis=0).argmax(axis=1)

    def predict_proba(self, X):
        """Mean over members of their class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns follow ``classes_``.
        """
        return self._member_proba(self._validate_X(X)).mean(axis=0).astype(np.float64)

    def predict(self, X):
        """Class with the largest mean probability over members.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted labels.
        """
        index = self._predict_index(self._validate_X(X))
        return self.classes_[index]

    def predict_members(self, X):
        """Each member's predicted labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_seeds, n_samples)
            ``y_pred[s]`` holds member ``s``'s predicted labels.
        """
        index = self._member_proba(self._validate_X(X)).argmax(axis=2)
        return self.classes_[index]

    def predict_proba_members(self, X):
        """Each member's class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_seeds, n_samples, n_classes)
            ``proba[s]`` holds member ``s``'s probabilities.
        """
        return self._member_proba(self._validate_X(X)).astype(np.float64)


class SeedEnsembleRegressor(RegressorMixin, _BaseSeedEnsemble):
    __doc__ = """Seed ensemble of a skorch regressor: samples of the trained-net distribution.
{params}

    See Also
    --------
    SeedEnsembleClassifier : The same for classification.

    Notes
    -----
    Member ``i`` equals a plain ``net.fit(X, y)`` run after
    ``torch.manual_seed(init_seeds_[i])`` with
    ``iterator_train__shuffle=True`` and
    ``iterator_train__generator=torch.Generator().manual_seed(order_seeds_[i])``,
    with ``y`` reshaped to 2-D as skorch's regressors expect. Fitting never
    changes torch's global random state or thread settings.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.preprocessing import scale
    >>> from skdtda import SeedEnsembleRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> ens = SeedEnsembleRegressor(n_seeds=4, random_state=0).fit(scale(X), scale(y))
    >>> ens.predict_members(scale(X)[:3]).shape
    (4, 3)
    """.format(params=_NET_DOC.format(group=_MEMORY_GROUP_SIZE,
                                      net_class="skorch.NeuralNetRegressor",
                                      sklearn_models="MLPRegressor, SGDRegressor, Ridge, "
                                      "LinearRegression",
                                      deterministic="Ridge, LinearRegression",
                                      default_net="one hidden layer of 32 units, Adam "
                                      "with lr=0.01, 30 epochs"))

    _task = "regressor"
    _parameter_constraints = {
        **_BaseSeedEnsemble._parameter_constraints,
        "net": [NeuralNetRegressor, *_sklearn.REGRESSORS, None],
    }

    def _default_net(self):
        return NeuralNetRegressor(
            MLP, module__hidden_layer_sizes=(32,), criterion=nn.MSELoss,
            optimizer=torch.optim.Adam, lr=0.01, max_epochs=30, batch_size=32,
            train_split=None, verbose=0)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train every member on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : SeedEnsembleRegressor
            The fitted ensemble.
        """
        return self._fit(*self._fit_input(X, y))

    def _fit_input(self, X, y):
        """Fit's checks of its rows and targets."""
        X, y = check_rows(self, X, y, reset=True, y_numeric=True, multi_output=True)
        self._y_ndim = np.ndim(y)
        self._n_net_outputs = 1 if self._y_ndim == 1 else y.shape[1]
        return X, y

    def _net_targets(self, y):
        y = np.asarray(y, dtype=_numpy_dtype(self._dtype))
        return np.ascontiguousarray(y.reshape(len(y), -1))

    @staticmethod
    def _constant_loss(y):
        y = np.asarray(y, dtype=np.float64)
        return float(np.mean(np.var(y.reshape(len(y), -1), axis=0))), "mean squared error"

    @staticmethod
    def _training_loss(member, out, y):
        y = torch.as_tensor(y, dtype=torch.float64)
        return float(torch.mean((out.double().reshape(y.shape) - y) ** 2))

    def _query_targets(self, X, y):
        if y is None:
            return self._net_targets(self._member_predictions(X).mean(axis=0))
        y = np.asarray(y, dtype=float)
        if len(y) != n_rows(X):
            raise ValueError(f"y has {len(y)} samples but X has {n_rows(X)}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity")
        return self._net_targets(y)

    def _member_predictions(self, X):
        preds = np.stack([member.predict(X) for member in self.estimators_])
        preds = preds.reshape(len(self.estimators_), n_rows(X), -1).astype(np.float64)
        return preds[..., 0] if self._y_ndim == 1 else preds

    def predict(self, X):
        """Mean over members of their predictions.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Shaped like the ``y`` passed to ``fit``.
        """
        return self._member_predictions(self._validate_X(X)).mean(axis=0)

    def predict_members(self, X):
        """Each member's predictions.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y_pred : ndarray of shape (n_seeds, n_samples) or (n_seeds, n_samples, n_targets)
            ``y_pred[s]`` holds member ``s``'s predictions.
        """
        return self._member_predictions(self._validate_X(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # skorch nets fit several targets; a scikit-learn member says for itself
        tags.target_tags.multi_output = (not _sklearn.is_sklearn_model(self.net)
                                         or get_tags(self.net).target_tags.multi_output)
        return tags
