"""UART PHY (8N1) with a fractional baud generator.

The bit period is the exact fraction ``clk_hz / baud``: a phase accumulator adds ``baud / g``
every cycle modulo ``clk_hz / g`` (``g = gcd(clk_hz, baud)``) and a bit boundary falls where it
wraps. The average rate is therefore exact for any clock (3 Mbaud from 25 MHz is 8⅓ cycles per
bit, which an integer divider gets 4 % wrong) and each bit edge is within one clock cycle of its
ideal time. Both directions restart the accumulator at every start bit, so the error never
accumulates past one byte.

:class:`UartRx` samples each bit in its middle (half a period after the falling start edge
seen through a two-flop synchronizer) and checks the stop bit; a byte whose stop bit is low is
dropped and counted in ``frame_errors``. A byte that arrives while the previous one is still
unaccepted is dropped and counted in ``overruns`` (the link's receiver is always ready, so this
does not happen in the accelerator). :class:`UartTx` sends bytes back to back on one continuous
bit grid.
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .config import ConfigError

__all__ = ["BaudRate", "UartRx", "UartTx", "Uart", "MIN_CYCLES_PER_BIT"]

# below this the start-edge uncertainty (synchronizer + one cycle) eats too much of a bit
MIN_CYCLES_PER_BIT = 6
COUNTER_BITS = 16


class BaudRate:
    """The bit period ``clk_hz / baud`` as a reduced fraction ``modulus / step`` cycles."""

    def __init__(self, clk_hz: int, baud: int):
        if not isinstance(clk_hz, int) or clk_hz <= 0:
            raise ConfigError(f"clk_hz={clk_hz!r}: must be a positive integer")
        if not isinstance(baud, int) or baud <= 0:
            raise ConfigError(f"baud={baud!r}: must be a positive integer")
        if clk_hz < MIN_CYCLES_PER_BIT * baud:
            raise ConfigError(f"baud {baud} at {clk_hz} Hz is {clk_hz / baud:.2f} cycles per "
                              f"bit; the UART needs at least {MIN_CYCLES_PER_BIT}")
        g = math.gcd(clk_hz, baud)
        self.clk_hz, self.baud = clk_hz, baud
        self.step, self.modulus = baud // g, clk_hz // g
        if self.modulus >= 1 << 24:
            raise ConfigError(f"clk_hz {clk_hz} / baud {baud} reduces to {self.modulus}/"
                              f"{self.step}: choose rates with a larger common divisor")

    @property
    def cycles_per_bit(self) -> float:
        return self.modulus / self.step

    @property
    def edge_jitter(self) -> float:
        """Largest deviation of a bit edge from its ideal time, as a fraction of a bit."""
        return 0.0 if self.step == 1 else 1 / self.cycles_per_bit

    def __repr__(self):
        return f"BaudRate({self.clk_hz}, {self.baud})"


def _phase(m: Module, rate: BaudRate, name: str):
    """A phase accumulator: returns ``(acc, tick)``; ``tick`` is high in the cycle the bit
    boundary falls (the caller loads ``acc`` to restart it)."""
    acc = Signal(range(rate.modulus), name=f"{name}_acc")
    nxt = Signal(range(rate.modulus + rate.step), name=f"{name}_next")
    tick = Signal(name=f"{name}_tick")
    m.d.comb += [nxt.eq(acc + rate.step), tick.eq(nxt >= rate.modulus)]
    m.d.sync += acc.eq(nxt - rate.modulus * tick)
    return acc, tick


class UartTx(wiring.Component):
    """``i``: bytes to send (accepted one at a time, when the previous stop bit ends);
    ``tx``: the line (idle high); ``busy``: a byte is on the line."""

    def __init__(self, rate: BaudRate):
        self._rate = rate
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        acc, tick = _phase(m, self._rate, "tx")
        shreg = Signal(10, init=0x3FF)       # stop, data[7:0], start; LSB on the line
        left = Signal(range(11))
        # the next byte is taken as the stop bit ends, keeping the phase: bytes sent back to
        # back are one continuous bit grid
        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(left != 0),
                     self.i.ready.eq((left == 0) | ((left == 1) & tick))]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq((1 << 9) | (self.i.payload << 1)), left.eq(10)]
            with m.If(left == 0):
                m.d.sync += acc.eq(0)
        with m.Elif((left != 0) & tick):
            m.d.sync += [shreg.eq((1 << 9) | (shreg >> 1)), left.eq(left - 1)]
        return m


class UartRx(wiring.Component):
    """``rx``: the line (asynchronous; synchronized here); ``o``: received bytes;
    ``busy``: a byte is being received; ``frame_errors`` / ``overruns``: saturating counts."""

    def __init__(self, rate: BaudRate):
        self._rate = rate
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8)), "busy": Out(1),
                          "frame_errors": Out(COUNTER_BITS), "overruns": Out(COUNTER_BITS)})

    def elaborate(self, platform):
        m = Module()
        rate = self._rate
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        acc, tick = _phase(m, rate, "rx")
        shreg = Signal(9)                    # data[7:0] then stop, shifted in from the top
        left = Signal(range(11))

        def bump(counter):
            with m.If(counter != (1 << COUNTER_BITS) - 1):
                m.d.sync += counter.eq(counter + 1)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.comb += self.busy.eq(left != 0)
        with m.If(left == 0):
            with m.If(~line):                # start edge: sample half a bit from now
                m.d.sync += [left.eq(10), acc.eq(rate.modulus // 2)]
        with m.Elif(tick):
            m.d.sync += left.eq(left - 1)
            with m.If(left == 10):
                with m.If(line):             # a glitch, not a start bit
                    m.d.sync += left.eq(0)
            with m.Else():
                m.d.sync += shreg.eq(Cat(shreg[1:], line))
            with m.If(left == 1):
                with m.If(~line):
                    bump(self.frame_errors)
                with m.Elif(self.o.valid & ~self.o.ready):
                    bump(self.overruns)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(shreg[1:]), self.o.valid.eq(1)]
        return m


class Uart(wiring.Component):
    """Both directions: pins ``rx`` / ``tx``; ``i``: bytes to send, ``o``: bytes received;
    ``busy``: either direction mid-byte; error counters from :class:`UartRx`."""

    def __init__(self, clk_hz: int, baud: int):
        self.rate = BaudRate(clk_hz, baud)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1),
                          "i": In(stream.Signature(8)), "o": Out(stream.Signature(8)),
                          "frame_errors": Out(COUNTER_BITS), "overruns": Out(COUNTER_BITS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rxu = rxu = UartRx(self.rate)
        m.submodules.txu = txu = UartTx(self.rate)
        wiring.connect(m, wiring.flipped(self.i), txu.i)
        wiring.connect(m, rxu.o, wiring.flipped(self.o))
        m.d.comb += [rxu.rx.eq(self.rx), self.tx.eq(txu.tx),
                     self.busy.eq(rxu.busy | txu.busy | rxu.o.valid),
                     self.frame_errors.eq(rxu.frame_errors), self.overruns.eq(rxu.overruns)]
        return m
