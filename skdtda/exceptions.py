"""Exceptions raised by skdtda."""

import contextlib

from sklearn.exceptions import ConvergenceWarning

__all__ = ["TrainingDivergedError", "UndertrainedWarning", "UnsupportedOperationError"]

#: The share of the constant prediction's training loss that a member's training
#: must remove for it not to count as undertrained (see :class:`UndertrainedWarning`).
UNDERTRAINED_GAIN = 0.05


class TrainingDivergedError(ValueError):
    """A member of a seed ensemble diverged: its loss or weights became NaN or inf.

    The message names the member and its seeds, so the run can be reproduced.
    """


class UndertrainedWarning(ConvergenceWarning):
    """Members of a seed ensemble barely lowered their training loss.

    After fitting, each member's training loss is compared with that of the best
    constant prediction on the same rows: for a classifier its log-loss with the
    entropy of the class frequencies (McFadden's pseudo-R^2), for a regressor its
    mean squared error with the variance of the targets (R^2). A member whose
    training removed less than 5% of the constant prediction's loss has learned
    next to nothing; attributing it describes its initialisation. The warning
    names those members and the losses; it is a
    :class:`sklearn.exceptions.ConvergenceWarning`, so filters for that apply.
    """


class UnsupportedOperationError(ValueError):
    """A curvature or gradient path needs a torch transform (vmap, forward-mode AD,
    double backward) that one of the module's ops does not implement.

    The message names the op and the curvature that works (EK-FAC and K-FAC
    use hooks and plain backward passes only).
    """

    @classmethod
    def of(cls, exc, what):
        first = str(exc).splitlines()[0][:240] if str(exc) else type(exc).__name__
        return cls(
            f"{what} needs torch.func transforms that {_failing_op(exc)} does not "
            f"support ({type(exc).__name__}: {first}); use curvature='ekfac' or 'kfac', "
            "which capture layer inputs and output gradients with hooks and one backward "
            "pass")


def _failing_op(exc):
    """Where ``exc`` was raised, in words: the innermost module ``forward`` on its
    traceback (its class and its name inside the outermost module) and the call it
    failed in, e.g. "the op `_VF.gru(input, hx, ...)` in GRU.forward (module 'rnn')"."""
    import traceback

    import torch

    calls = []  # (module, the failing expression) of every module forward on the traceback
    tb, summaries = exc.__traceback__, traceback.extract_tb(exc.__traceback__)
    for summary in summaries:
        owner = tb.tb_frame.f_locals.get("self")
        if summary.name == "forward" and isinstance(owner, torch.nn.Module):
            calls.append((owner, _expression(summary)))
        tb = tb.tb_next
    if not calls:
        return "an op of this module"
    module, call = calls[-1]
    names = {id(sub): name for name, sub in calls[0][0].named_modules()}
    where = f"{type(module).__name__}.forward"
    if names.get(id(module)):
        where += f" (module {names[id(module)]!r})"
    return f"the op `{call}` in {where}" if call else f"an op in {where}"


def _expression(summary, width=80):
    """The expression a traceback entry points at (Python 3.11+ records its columns;
    else its first line), a call shown as its callee, ``_VF.gru(...)``."""
    import linecache

    first, last = summary.lineno, getattr(summary, "end_lineno", None) or summary.lineno
    lines = [linecache.getline(summary.filename, n) for n in range(first, last + 1)]
    start, end = getattr(summary, "colno", None), getattr(summary, "end_colno", None)
    if start is not None and end is not None and lines:
        lines[-1] = lines[-1][:end]
        lines[0] = lines[0][start:]
    text = " ".join(" ".join(line.split("#")[0] for line in lines).split())
    if "(" in text:
        text = text[:text.index("(")] + "(...)"
    return text if len(text) <= width else text[:width - 3] + "..."


@contextlib.contextmanager
def unsupported_ops(what):
    """Report a torch op that a transform (vmap, double backward) lacks as an
    :class:`UnsupportedOperationError` naming ``what`` needed it.

    It wraps only transforms of a module whose plain forward and backward have
    already run (the members were trained), so a torch error raised inside is the
    transform's: a missing batching rule, or an op that writes in place into an
    unbatched tensor (torch's GRU: "output with shape [1, 16] doesn't match the
    broadcast shape [256, 1, 16]"), which names no transform. Running out of
    memory passes unchanged.
    """
    import torch

    try:
        yield
    except (NotImplementedError, RuntimeError) as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            raise
        raise UnsupportedOperationError.of(exc, what) from exc
