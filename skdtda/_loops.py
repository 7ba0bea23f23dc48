"""Work done in pieces: row chunks, and a progress bar over them."""

__all__ = ["chunks", "progress"]


def chunks(n, size):
    """Slices ``[start, start + size)`` that cover ``range(n)`` in order."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def progress(total, desc, unit, verbose):
    """A tqdm bar over ``total`` steps: silent (``disable``) unless ``verbose``, and
    kept on screen afterwards when ``verbose > 1``. Use it as a context manager."""
    if verbose:
        from tqdm.auto import tqdm
    else:  # a disabled bar draws nothing; the plain class imports faster
        from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=verbose > 1, disable=not verbose)
