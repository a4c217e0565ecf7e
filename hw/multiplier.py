"""Pipelined signed multipliers with a fixed two-cycle latency: one for DSP blocks, one in LUTs.

Both compute ``p = a * b`` exactly for every signed input (including ``-2^(n-1) * -2^(m-1)``) and
register twice, so a processing element can use either without changing its timing. The DSP form
is :func:`hw.dsp.product`: on ECP5 one MULT18X18D holding both registers, elsewhere a ``*``
between registers, which yosys maps onto a SB_MAC16 (iCE40). The LUT form builds the partial
products explicitly (no ``$mul`` cell is left for yosys to map onto a DSP): radix-4 Booth
recoding of ``b`` halves the partial products; each is ``0, ±a, ±2a`` formed as a one's
complement, with all the ``+1`` corrections gathered into one extra term (no negation adder per
partial product). The adder tree is split across the two stages.
"""
from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Mux, Signal, signed

from . import dsp
from .pipeline import tree_sum

__all__ = ["PipelinedMultiplier", "LATENCY"]

LATENCY = 2          # the LUT form's two adder-tree stages; the DSP form is dsp.LATENCY (the same)


class PipelinedMultiplier(Elaboratable):
    """``p`` (``a.width + b.width`` bits, signed) equals ``a * b`` from ``LATENCY`` cycles earlier.

    Parameters
    ----------
    a, b : signed operand signals (already registered by the caller).
    use_dsp : map onto a hardware multiplier (True) or build it from LUTs (False).
    """

    def __init__(self, a: Signal, b: Signal, *, use_dsp: bool):
        if not (a.shape().signed and b.shape().signed):
            raise TypeError("multiplier operands must be signed")
        self.a, self.b, self.use_dsp = a, b, use_dsp
        self.p = Signal(signed(len(a) + len(b)))

    def elaborate(self, platform):
        m = Module()
        a, b = self.a, self.b
        if self.use_dsp:
            m.d.comb += self.p.eq(dsp.product(m, platform, a, b, "product"))
            return m
        terms = _booth_terms(a, b)
        half = (len(terms) + 1) // 2
        lo, hi = Signal.like(self.p), Signal.like(self.p)
        m.d.sync += [lo.eq(tree_sum(terms[:half])), hi.eq(tree_sum(terms[half:]))]
        m.d.sync += self.p.eq(lo + hi)
        return m


def _booth_terms(a, b):
    """Radix-4 Booth partial products of signed ``a * b``: digit ``i`` of ``b`` is
    ``-2 b[2i+1] + b[2i] + b[2i-1]`` in ``{-2..2}``; returns the shifted terms whose sum is
    ``a * b`` (the last term is the two's-complement correction of the negative digits)."""
    n = len(b) + (len(b) & 1)                      # even number of bits (sign-extended)
    bits = [b[k] if k < len(b) else b[-1] for k in range(n)]
    terms, correction = [], 0
    for i in range(n // 2):
        hi, mid = bits[2 * i + 1], bits[2 * i]
        lo = bits[2 * i - 1] if i else 0
        one = mid ^ lo
        two = (hi & ~mid & ~lo) | (~hi & mid & lo)
        mag = Mux(two, a.as_signed() << 1, Mux(one, a.as_signed(), 0))
        terms.append(Mux(hi, ~mag, mag).as_signed() << (2 * i))    # ~mag = -mag - 1
        correction = correction | (hi << (2 * i)) if i else hi
    terms.append(correction)
    return terms
