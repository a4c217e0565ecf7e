"""The I-ViT shift exponential (``gen.intops.shift_exp``) for ``x <= 0`` as pipeline stages.

``xp = x + (x >> 1) - (x >> 4)`` (x * 1.4375), clamped at ``n * x0``; ``q = xp // x0`` by a
restoring division with ``bit_length(n)`` quotient bits (``q <= n``), ``r = xp - q * x0``;
``e = ((r - 2 * x0) << (n - q)) >> 1``. Four register stages, supplied by the caller's ``stage``
function so the same datapath serves free-running and stallable pipelines.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Mux

from .pipeline import wire

__all__ = ["shift_exp", "STAGES"]

STAGES = 4


def shift_exp(m, stage, x, x0, n: int, name: str):
    """``stage(value, name)`` registers a value; ``x0`` is the (negative) CT constant."""
    xp = stage(x + (x >> 1) - (x >> 4), f"{name}_xp")
    xc = stage(Mux(xp < n * x0, n * x0, xp), f"{name}_xc")
    a, d = -xc, -x0                                   # both >= 0, a <= n * d
    qbits = n.bit_length()
    rem, bits = a, []
    for k in reversed(range(qbits)):
        take = wire(m, rem >= (d << k), f"{name}_take{k}")
        rem = wire(m, Mux(take, rem - (d << k), rem), f"{name}_rem{k}")
        bits.append(take)
    q = stage(Cat(*reversed(bits)), f"{name}_q")
    r = stage(-rem, f"{name}_r")                      # xp - q * x0, in (x0, 0]
    return stage(((r - 2 * x0) << (n - q)[:qbits]) >> 1, f"{name}_e")
