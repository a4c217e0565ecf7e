"""Exact integer square root, digit by digit: ``floor(sqrt(n))`` for unsigned ``n`` of ``bits``
bits.

``bits_per_cycle`` result bits per cycle (1, or 2 chaining two steps: ``ceil(bits / 4)`` cycles),
no divider, no multiplier: the ``dyad`` root
of :func:`gen.intops.isqrt` (chosen over a stopping Newton iteration because it needs only a
``bits``-wide subtractor and its latency is fixed). One root at a time. ``split_steps``: each
result bit takes two cycles, the subtraction into registers, then the choice (as
:class:`~hw.divider.SequentialDivider`'s).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .pipeline import wire

__all__ = ["SequentialSqrt"]


class SequentialSqrt(wiring.Component):
    """Members: ``i`` (stream of ``bits``-bit radicands), ``o`` (stream of roots)."""

    def __init__(self, bits: int, bits_per_cycle: int = 1, split_steps: bool = False):
        with validating(self):
            if not isinstance(bits, int) or not 2 <= bits <= 64:
                raise ValueError(f"bits must be an integer in [2, 64], not {bits!r}")
            if bits_per_cycle not in (1, 2):
                raise ValueError(f"bits_per_cycle must be 1 or 2, not {bits_per_cycle!r}")
            if split_steps and bits_per_cycle != 1:
                raise ValueError("split_steps needs bits_per_cycle 1")
        self.bits_per_cycle, self.split_steps = bits_per_cycle, split_steps
        self.bits = self.padded(bits, bits_per_cycle)
        self.root_bits = self.bits // 2
        self.latency = self.cycles(bits, bits_per_cycle, split_steps)
        super().__init__({"i": In(stream.Signature(unsigned(bits))),
                          "o": Out(stream.Signature(unsigned(self.root_bits)))})

    @staticmethod
    def padded(bits: int, bits_per_cycle: int) -> int:
        """Radicand bits processed: whole cycles of ``2 * bits_per_cycle`` bits."""
        step = 2 * bits_per_cycle
        return -(-bits // step) * step

    @classmethod
    def cycles(cls, bits: int, bits_per_cycle: int, split_steps: bool = False) -> int:
        """Cycles from radicand accepted to the root offered."""
        steps = cls.padded(bits, bits_per_cycle) // 2 // bits_per_cycle
        return steps * (2 if split_steps else 1) + 1

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
        # the operands load while idle (``i.ready``: from flip-flops only), so only ``busy``
        # loads on the handshake (a caller's state through the handshake to ~100 enables)
        with m.If(self.i.ready):
            m.d.sync += [rem.eq(self.i.payload), root.eq(0), bit.eq(1 << (self.bits - 2))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += busy.eq(1)
        if self.split_steps:
            # phase 0: rem - (root | bit) registered (its sign is the compare); phase 1: choose
            diff = Signal(self.bits + 1, name="diff")
            chosen = Signal(name="chosen")
            with m.If(busy & ~chosen):
                m.d.sync += [diff.eq(rem - (root | bit)), chosen.eq(1)]
            with m.If(chosen):
                take = ~diff[-1]
                m.d.sync += [rem.eq(Mux(take, diff, rem)),
                             root.eq(Mux(take, (root >> 1) | bit, root >> 1)), bit.eq(bit >> 2),
                             chosen.eq(0)]
                with m.If(bit == 1):
                    m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
            return m
        with m.If(busy):
            # root's bits all lie at least two places above bit's (bit moves down two places
            # a step, root one), so root + bit and (root >> 1) + bit need no adder: they are ORs
            r, q, b = rem, root, bit
            for j in range(self.bits_per_cycle):
                trial = q | b
                take = r >= trial
                r, q = (wire(m, Mux(take, r - trial, r), f"rem{j}"),
                        wire(m, Mux(take, (q >> 1) | b, q >> 1), f"root{j}"))
                b = b >> 2
            m.d.sync += [rem.eq(r), root.eq(q), bit.eq(b)]
            with m.If(bit == 1 << (2 * self.bits_per_cycle - 2)):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        return m
