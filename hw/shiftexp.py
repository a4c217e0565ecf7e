"""The I-ViT shift exponential (``gen.intops.shift_exp``) for ``x <= 0`` as pipeline stages.

``xp = x + (x >> 1) - (x >> 4)`` (x * 1.4375), clamped at ``n * x0``; ``q = xp // x0`` by a
restoring division with ``bit_length(n)`` quotient bits (``q <= n``), ``r = xp - q * x0``;
``e = ((r - 2 * x0) << (n - q)) >> 1``.

Every step is its own register stage (:func:`stages` of them): one compare-subtract per quotient
bit, and the final shift in two steps (whole nibbles, then the rest). The four division steps in
one cycle limited the ``ivit`` Shiftmax to 41.7 MHz. The stages are supplied by the caller's
``stage`` function so the same datapath serves free-running and stallable pipelines.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux

from .pipeline import register, replicas, tree_sum, wire

__all__ = ["shift_exp", "clamp_bounds", "divide_steps", "stages"]


def stages(n: int) -> int:
    """Register stages of :func:`shift_exp` for ``n``: clamp (2), one per quotient bit, the
    shift's operand, its two steps."""
    return 2 + n.bit_length() + 3


def divide_steps(m, stage, rem, d, qbits: int, name: str, carry=()):
    """Restoring division of ``rem >= 0`` by ``d`` with ``qbits`` quotient bits, one bit per
    ``stage``; the ``carry`` values ride alongside. Returns ``(quotient, remainder, carried)``,
    ``qbits`` stages later."""
    q, carried = Cat(), list(carry)
    for k in reversed(range(qbits)):
        take = wire(m, rem >= (d << k), f"{name}_take{k}")
        rem, q = (stage(Mux(take, rem - (d << k), rem), f"{name}_rem{k}"),
                  stage(Cat(take, q), f"{name}_q{k}"))
        carried = [stage(v, f"{name}_c{i}_{k}") for i, v in enumerate(carried)]
    return q, rem, carried


def clamp_bounds(m, x0, n: int, name: str, copies: int = 1) -> list:
    """``copies`` of ``(n * x0, -n * x0, -x0)`` (the clamp of :func:`shift_exp` and its divisor),
    each in registers of its own. ``x0`` is a parameter, stable while elements flow, so these are
    made once: the product by the constant ``n`` as shifted adds registered at every level (a
    multiplier yosys inferred for ``n * x0`` in front of every lane's compare was the ivit
    Shiftmax's path, 19 ns), and the divisor's negation registered (in front of every division
    step's compare it was the next one, 19.6 ns)."""
    terms = [x0 << k for k in range(n.bit_length()) if n >> k & 1]
    nx0 = tree_sum(terms, stage=lambda v, level: register(m, v, f"{name}_{level}"))
    neg = register(m, -nx0, f"{name}_neg")
    nx0 = register(m, nx0, f"{name}_nx0")
    d = register(m, -x0, f"{name}_d")
    return list(zip(replicas(m, nx0, copies, f"{name}_lo"),
                    replicas(m, neg, copies, f"{name}_mag"),
                    replicas(m, d, copies, f"{name}_div")))


def shift_exp(m, stage, x, n: int, name: str, bound):
    """``stage(value, name)`` registers a value; ``bound`` is one of :func:`clamp_bounds` for
    ``n`` and the (negative) CT constant ``x0``, stable while the pipeline runs."""
    xp = stage(x + (x >> 1) - (x >> 4), f"{name}_xp")
    # the clamped value's magnitude (xp <= 0): its negation beside the clamp's compare, not in
    # front of the first division step (that chain was the ivit Shiftmax's path)
    lo, mag, d = bound                                # the magnitude and d = -x0 are >= 0
    rem = stage(Mux(xp < lo, mag, -xp), f"{name}_a")
    qbits = n.bit_length()
    q, rem, _ = divide_steps(m, stage, rem, d, qbits, name)
    # r = -rem is in (x0, 0]; r - 2 * x0 >= 0
    base, amount = stage((d << 1) - rem, f"{name}_base"), stage((n - q)[:qbits], f"{name}_sh")
    coarse = stage(base << Cat(Const(0, 2), amount[2:]), f"{name}_coarse")
    fine = stage(amount[:2], f"{name}_fine")
    return stage((coarse << fine) >> 1, f"{name}_e")
