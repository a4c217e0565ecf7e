"""Exact integer square root, digit by digit: ``floor(sqrt(n))`` for unsigned ``n`` of ``bits``
bits.

One result bit per cycle (``ceil(bits / 2)`` cycles), no divider, no multiplier: the ``dyad`` root
of :func:`gen.intops.isqrt` (chosen over a stopping Newton iteration because it needs only a
``bits``-wide subtractor and its latency is fixed). One root at a time.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating

__all__ = ["SequentialSqrt"]


class SequentialSqrt(wiring.Component):
    """Members: ``i`` (stream of ``bits``-bit radicands), ``o`` (stream of roots)."""

    def __init__(self, bits: int):
        with validating(self):
            if not isinstance(bits, int) or not 2 <= bits <= 64:
                raise ValueError(f"bits must be an integer in [2, 64], not {bits!r}")
        self.bits = bits + (bits & 1)                 # an even number of radicand bits
        self.root_bits = self.bits // 2
        super().__init__({"i": In(stream.Signature(unsigned(bits))),
                          "o": Out(stream.Signature(unsigned(self.root_bits)))})

    def elaborate(self, platform):
        m = Module()
        rem = Signal(self.bits)
        root = Signal(self.bits)
        bit = Signal(self.bits)
        busy = Signal()
        m.d.comb += [self.i.ready.eq(~busy & ~self.o.valid),
                     self.o.payload.eq(root[:self.root_bits])]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [rem.eq(self.i.payload), root.eq(0), bit.eq(1 << (self.bits - 2)),
                         busy.eq(1)]
        with m.If(busy):
            trial = root + bit
            take = rem >= trial
            m.d.sync += [rem.eq(Mux(take, rem - trial, rem)),
                         root.eq(Mux(take, (root >> 1) + bit, root >> 1)), bit.eq(bit >> 2)]
            with m.If(bit == 1):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        return m
