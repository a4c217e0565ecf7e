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
