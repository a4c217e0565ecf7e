"""Constructor argument checks for gateware components."""
from __future__ import annotations

from contextlib import contextmanager

__all__ = ["validating"]


@contextmanager
def validating(component):
    """Wrap a component constructor's argument checks. A component refused with ``TypeError`` or
    ``ValueError`` was never meant to be elaborated, so Amaranth's "created but never used"
    warning is silenced for it."""
    try:
        yield
    except (TypeError, ValueError):
        component._MustUse__used = True
        raise


def check_row_unit(*, lanes, in_bits, max_row, max_row_limit: int, mode=None) -> None:
    """The constructor arguments every row unit (Shiftmax, ShiftGELU, LayerNorm) shares."""
    if mode is not None and mode not in ("ivit", "dyad"):
        raise ValueError(f"mode must be 'ivit' or 'dyad', not {mode!r}")
    if not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    if in_bits not in (8, 16):
        raise ValueError(f"in_bits must be 8 or 16, not {in_bits!r}")
    if not isinstance(max_row, int) or not 1 <= max_row <= max_row_limit:
        raise ValueError(f"max_row must be an integer in [1, {max_row_limit}], not {max_row!r}")
