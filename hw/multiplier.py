"""Pipelined signed multipliers with a fixed two-cycle latency: one for DSP blocks, one in LUTs.

Both compute ``p = a * b`` exactly for every signed input (including ``-2^(n-1) * -2^(m-1)``) and
register twice, so a processing element can use either without changing its timing. The DSP form
is a plain ``*`` between registers, which yosys maps onto one MULT18X18D (ECP5) or SB_MAC16
(iCE40). The LUT form builds the partial products explicitly (no ``$mul`` cell is left for yosys
to map onto a DSP) and splits the adder tree across the two stages.
"""
from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Mux, Signal, signed

__all__ = ["PipelinedMultiplier", "LATENCY"]

LATENCY = 2


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
            stage = Signal.like(self.p)
            m.d.sync += [stage.eq(a * b), self.p.eq(stage)]
            return m
        # b = -b[n-1] 2^(n-1) + sum_k b[k] 2^k : one shifted copy of a per bit of b
        n = len(b)
        terms = [Mux(b[k], a, 0).as_signed() << k for k in range(n - 1)]
        terms.append(-(Mux(b[n - 1], a, 0).as_signed() << (n - 1)))
        half = (len(terms) + 1) // 2
        lo, hi = Signal.like(self.p), Signal.like(self.p)
        m.d.sync += [lo.eq(_tree_sum(terms[:half])), hi.eq(_tree_sum(terms[half:]))]
        m.d.sync += self.p.eq(lo + hi)
        return m


def _tree_sum(values):
    values = list(values)
    if not values:
        return 0
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]
