"""A board's top level: clocking, reset and pins around :class:`hw.top.SerialAccelerator`.

::

   board clock pin ─► PLL (ecppll / icepll Verilog) ─► sync domain, reset until locked
   (on ECP5 the synchronised reset is distributed on a global line through a DCCA)
   uart.rx pin ─► SerialAccelerator ─► uart.tx pin
   led 0: heartbeat (~1.5 Hz: the core clock runs), led 1: link busy, led 2: unit error,
   led 3: a byte arrived with a bad stop bit (wrong baud rate?) — as many as the board has

The PLL is the vendor primitive configured by the Trellis / IceStorm calculators (their Verilog
is passed in as :class:`Pll`); with ``pll=None`` the board clock drives the core directly.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.build import ResourceError
from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .top import SerialAccelerator

__all__ = ["Pll", "BoardTop"]


@dataclass(frozen=True)
class Pll:
    """A generated PLL module: ``module`` with ports ``clk_in`` -> ``clk_out``, ``locked``."""
    module: str
    verilog: str
    clk_in: str
    clk_out: str
    in_hz: int
    out_hz: int


class BoardTop(Elaboratable):
    """``core`` clocked by ``pll`` (or the board clock) on ``platform`` pins."""

    def __init__(self, core: SerialAccelerator, pll: Pll | None, core_hz: int):
        self.core, self.pll, self.core_hz = core, pll, core_hz

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd_sync = ClockDomain("sync")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", platform.request(platform.default_clk,
                                                                         dir="-"))
        clk_in = clk_buf.i
        if self.pll is None:
            m.d.comb += cd_sync.clk.eq(clk_in)
        else:
            platform.add_file(f"{self.pll.module}.v", self.pll.verilog)
            locked = Signal()
            m.submodules.pll = Instance(self.pll.module, **{f"i_{self.pll.clk_in}": clk_in,
                                                            f"o_{self.pll.clk_out}":
                                                                ClockSignal("sync"),
                                                            "o_locked": locked})
            if platform.family == "ecp5":
                # the synchronised reset reaches every flip-flop of the core: through a clock
                # buffer (DCCA) onto a global line, not across the fabric (19.7 ns of general
                # routing from the synchroniser to the drain's registers at 8x8)
                m.domains.reset_sync = ClockDomain("reset_sync")
                m.d.comb += ClockSignal("reset_sync").eq(ClockSignal("sync"))
                m.submodules.reset = ResetSynchronizer(~locked, domain="reset_sync")
                m.submodules.reset_buf = Instance("DCCA", i_CLKI=ResetSignal("reset_sync"),
                                                  i_CE=1, o_CLKO=ResetSignal("sync"))
            else:
                m.submodules.reset = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(cd_sync.clk, self.core_hz)

        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in
                                                 platform.lookup("uart", 0).ios})
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buf.i), tx_buf.o.eq(core.tx)]

        beat = Signal(range(self.core_hz // 3 + 1))
        blink = Signal()
        with m.If(beat == self.core_hz // 3):
            m.d.sync += [beat.eq(0), blink.eq(~blink)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        for n, value in enumerate((blink, ~core.idle, core.error, core.frame_errors != 0)):
            try:
                led = io.Buffer("o", platform.request("led", n, dir="-"))
            except ResourceError:       # the board has fewer LEDs
                break
            m.submodules[f"led{n}"] = led
            m.d.comb += led.o.eq(value)
        return m
