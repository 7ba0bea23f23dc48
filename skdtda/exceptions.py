"""Exceptions raised by skdtda."""

__all__ = ["TrainingDivergedError"]


class TrainingDivergedError(ValueError):
    """A member of a seed ensemble diverged: its loss or weights became NaN or inf.

    The message names the member and its seeds, so the run can be reproduced.
    """
