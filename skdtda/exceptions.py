"""Exceptions raised by skdtda."""

__all__ = ["TrainingDivergedError", "UnsupportedOperationError"]


class TrainingDivergedError(ValueError):
    """A member of a seed ensemble diverged: its loss or weights became NaN or inf.

    The message names the member and its seeds, so the run can be reproduced.
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
            f"{what} needs torch.func transforms that an op of this module does not "
            f"support ({type(exc).__name__}: {first}); use curvature='ekfac' or 'kfac', "
            "which capture layer inputs and output gradients with hooks and one backward "
            "pass")
