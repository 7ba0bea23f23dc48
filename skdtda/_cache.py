"""Keys for what ``memory=`` keeps on disk."""

import joblib

__all__ = ["settings_key"]


def settings_key(estimator, exclude=()):
    """A stable description of an estimator's settings, for cache keys (its repr is
    not complete): the ``(name, value)`` pairs of ``get_params(deep=True)``, sorted
    by name, without the names in ``exclude``.

    Values that are not plain scalars enter by their joblib hash (classes by
    name, instances by their state); a value that cannot be pickled enters by
    its repr, which at worst misses the cache.
    """
    items = []
    for name, value in sorted(estimator.get_params(deep=True).items()):
        if name in exclude:
            continue
        if not isinstance(value, (int, float, str, bool, type(None))):
            try:
                value = joblib.hash(value)
            except Exception:  # unpicklable (a lambda, a lock): fall back to its repr
                value = repr(value)
        items.append((name, value))
    return items
