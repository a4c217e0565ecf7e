"""Sequential restoring divider: ``bits_per_cycle`` quotient bits per cycle (radix 2 or 4),
shared by a unit's row reciprocals.

``quot = num // den`` for unsigned ``num`` (``num_bits``) and ``den`` (``den_bits``), exactly
``ceil(quotient_bits / bits_per_cycle)`` cycles after the operands are accepted (plus one to
present the result). ``quotient_bits`` (default ``num_bits``) is a bound the caller guarantees,
``quot < 2^quotient_bits``: the leading quotient bits are then known zeros and are skipped (the
remainder starts as the numerator's top bits). One division at a time: ``i.ready`` is low while
busy or while a result waits on ``o``.
``den = 0`` gives all ones (callers never divide by zero; the value is defined so a fault cannot
hang). Radix 4 chains two compare-subtracts per cycle: half the latency for a longer path.
``split_steps`` goes the other way: each quotient bit takes two cycles, the subtraction (its
sign is the compare) into registers, then the choice of the new remainder, so no cycle holds both
a carry chain and the quotient bit's fan-out to every remainder bit (twice the latency).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating

__all__ = ["SequentialDivider"]


class SequentialDivider(wiring.Component):
    """Members: ``i`` (stream of ``{num, den}``), ``o`` (stream of the quotient)."""

    def __init__(self, num_bits: int, den_bits: int, bits_per_cycle: int = 1,
                 quotient_bits: int | None = None, split_steps: bool = False):
        quotient_bits = num_bits if quotient_bits is None else quotient_bits
        with validating(self):
            for name, v in (("num_bits", num_bits), ("den_bits", den_bits),
                            ("quotient_bits", quotient_bits)):
                if not isinstance(v, int) or not 1 <= v <= 64:
                    raise ValueError(f"{name} must be an integer in [1, 64], not {v!r}")
            if bits_per_cycle not in (1, 2):
                raise ValueError(f"bits_per_cycle must be 1 or 2, not {bits_per_cycle!r}")
            if split_steps and bits_per_cycle != 1:
                raise ValueError("split_steps needs bits_per_cycle 1")
        self.num_bits, self.den_bits, self.bits_per_cycle = num_bits, den_bits, bits_per_cycle
        self.split_steps = split_steps
        self.quotient_bits = min(quotient_bits, num_bits)
        self.latency = self.cycles(self.quotient_bits, bits_per_cycle, split_steps)
        layout = data.StructLayout({"num": unsigned(num_bits), "den": unsigned(den_bits)})
        super().__init__({"i": In(stream.Signature(layout)),
                          "o": Out(stream.Signature(unsigned(num_bits)))})

    @staticmethod
    def cycles(quotient_bits: int, bits_per_cycle: int, split_steps: bool = False) -> int:
        """Cycles from operands accepted to the quotient offered."""
        return -(-quotient_bits // bits_per_cycle) * (2 if split_steps else 1) + 1

    def elaborate(self, platform):
        m = Module()
        k = self.bits_per_cycle
        steps = -(-self.quotient_bits // k)
        nb = steps * k                           # quotient bits computed, in whole steps
        num = Signal(nb)                         # the numerator's low nb bits, shifted out
        den = Signal(self.den_bits)
        rem = Signal(self.den_bits + 1)
        quot = Signal(nb)
        count = Signal(range(steps + 1))
        busy = Signal()
        m.d.comb += [self.i.ready.eq(~busy & ~self.o.valid),
                     self.o.payload.eq(quot[:self.num_bits])]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(~busy):
            # the operands are tracked while idle and kept from the cycle a division starts, so
            # their registers load on ``busy`` (a flip-flop), not on the handshake (a caller's
            # state through ``i.valid``/``i.ready`` to ~100 enables was the path); quot < 2^nb:
            # the numerator's bits above nb leave a remainder below den
            m.d.sync += [num.eq(self.i.payload.num[:nb]), den.eq(self.i.payload.den),
                         rem.eq(self.i.payload.num >> nb)]
            # the step count too (the handshake reaching the count register's enable was the
            # 16-lane Shiftmax's path, 11 ns of routing): only ``busy`` loads on the handshake
            m.d.sync += count.eq(steps)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += busy.eq(1)
        if self.split_steps:
            # phase 0: trial - den registered (its sign is the compare); phase 1: the remainder
            trial = Cat(num[nb - 1], rem)
            diff = Signal(len(trial) + 1, name="diff")
            kept = Signal.like(trial, name="kept")
            chosen = Signal(name="chosen")               # phase 1: diff holds this bit's step
            with m.If(busy & ~chosen):
                m.d.sync += [diff.eq(trial - den), kept.eq(trial), chosen.eq(1)]
            with m.If(chosen):
                take = ~diff[-1]
                m.d.sync += [rem.eq(Mux(take, diff, kept)), quot.eq(Cat(take, quot)[:nb]),
                             num.eq(num << 1), count.eq(count - 1), chosen.eq(0)]
                with m.If(count == 1):
                    m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
            return m
        with m.If(busy):
            r, q = rem, quot
            for j in range(k):
                trial = Cat(num[nb - 1 - j], r)          # (rem << 1) | next numerator bit
                take = trial >= den
                r = Signal.like(rem, name=f"rem_step{j}")
                m.d.comb += r.eq(Mux(take, trial - den, trial))
                q = Cat(take, q)[:nb]
            m.d.sync += [rem.eq(r), quot.eq(q), num.eq(num << k), count.eq(count - 1)]
            with m.If(count == 1):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        return m



def pipelined_quotient(p, num: int, den, bits: int, name: str = "pdiv"):
    """``num // den`` for a constant ``num < 2^bits`` and an unsigned value ``den >= 1``: one
    restoring step per stage of the :class:`~hw.pipeline.Pipeline` ``p`` (``bits`` stages, a new
    division every cycle)."""
    if not 0 <= num < 1 << bits:
        raise ValueError(f"num must be in [0, 2^{bits}), not {num!r}")
    width = len(den) + 1
    rem, quot = Const(0, width), Const(0, 1)
    for k in reversed(range(bits)):
        trial = Cat(Const((num >> k) & 1, 1), rem)
        take = trial >= den
        # rem <= num >> k < 2^(bits - k): the early steps' remainders are narrow
        rem = p.stage(Mux(take, trial - den, trial)[:min(width, bits - k)], f"{name}_rem{k}")
        quot = p.stage(Cat(take, quot)[:bits], f"{name}_q{k}")
        den = p.stage(den, f"{name}_den{k}")
    return quot
