"""Instruction sequencer and performance counters.

``run`` with ``pc`` starts fetching. Per instruction: fetch (instruction memory, synchronous
read), decode, read the vector-unit constants (``v_index``), one ``start`` strobe to the engines,
then wait until the engines report ``idle`` (the drain has written the last row) — or, for an
instruction marked ``chain``, only until its operand readers are idle and the drain can queue
the next job. ``END`` retires the program and raises ``done`` with the ``pc`` it stopped at.

Counters (:data:`hw.isa.PERF_COUNTERS`) count while a program runs and are cleared by ``run``.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .isa import ADDR_BITS, PERF_COUNTERS, Opcode, instr_layout

__all__ = ["Controller"]

# input strobe -> the counter it increments
EVENTS = {"array_beat": "array_beats", "a_starved": "a_starved", "b_starved": "b_starved",
          "drain_row": "drain_rows"}


class Controller(wiring.Component):
    """Members: ``run``/``pc``/``done``/``stop_pc`` (host side), ``i_addr``/``i_data``
    (instruction memory: ``i_data`` is taken two cycles after ``i_addr``, in ``DECODE``, so the
    top registers the memory's word once: the block RAM's 5.6 ns from clock to data straight
    into the decode was the 8x8 board build's path), ``v_addr``/``v_en``
    (vector table; the top latches the data the cycle after ``v_en``, in the ``LATCH`` state;
    both addresses hold from the cycle before their read, so the memories can read always),
    ``instr``/``start``/``idle`` (engines), one input per event of :data:`EVENTS` and one
    32-bit output per :data:`PERF_COUNTERS` entry (``perf_<name>``)."""

    def __init__(self):
        members = {
            "run": In(1), "pc": In(ADDR_BITS), "done": Out(1), "stop_pc": Out(ADDR_BITS),
            "i_addr": Out(ADDR_BITS), "i_data": In(instr_layout),
            "v_addr": Out(8), "v_en": Out(1),
            "instr": Out(instr_layout), "start": Out(1), "idle": In(1),
            "readers_idle": In(1), "drain_free": In(1),
            **{e: In(1) for e in EVENTS},
            **{f"perf_{n}": Out(32) for n in PERF_COUNTERS},
        }
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        pc = Signal(ADDR_BITS)
        instr = Signal(instr_layout)
        m.d.comb += [self.instr.eq(instr), self.i_addr.eq(pc), self.stop_pc.eq(pc),
                     self.v_addr.eq(instr.v_index)]
        counters = {n: Signal(32, name=f"cnt_{n}") for n in PERF_COUNTERS}
        for n, c in counters.items():
            m.d.comb += getattr(self, f"perf_{n}").eq(c)

        running = Signal()
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.run):
                    m.d.sync += [pc.eq(self.pc), running.eq(1)]
                    m.d.sync += [c.eq(0) for c in counters.values()]
                    m.next = "FETCH"
            with m.State("FETCH"):                # the memory reads ``pc``
                m.next = "FETCHED"
            with m.State("FETCHED"):              # the top registers the word
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += instr.eq(self.i_data)
                with m.If(self.i_data.op == Opcode.END):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "CONSTANTS"
            with m.State("CONSTANTS"):
                m.d.comb += self.v_en.eq(1)
                m.next = "LATCH"
            with m.State("LATCH"):             # the top latches the vector parameters
                m.next = "START"
            with m.State("START"):
                m.d.comb += self.start.eq(1)
                m.next = "SETTLE"
            with m.State("SETTLE"):             # engines latch their job this cycle
                m.next = "WAIT"
            with m.State("WAIT"):
                chained = instr.chain & self.readers_idle & self.drain_free
                with m.If(self.idle | chained):
                    m.d.sync += [pc.eq(pc + 1),
                                 counters["retired"].eq(counters["retired"] + 1)]
                    m.next = "FETCH"

        executing = running & ~self.done
        with m.If(executing):
            m.d.sync += counters["cycles"].eq(counters["cycles"] + 1)
        for op, name in ((Opcode.GEMM, "gemm_cycles"), (Opcode.SOFTMAX, "softmax_cycles"),
                         (Opcode.GELU, "gelu_cycles"), (Opcode.LAYERNORM, "layernorm_cycles")):
            with m.If(executing & (instr.op == op)):
                m.d.sync += counters[name].eq(counters[name] + 1)
        for ev, name in EVENTS.items():
            with m.If(getattr(self, ev)):
                m.d.sync += counters[name].eq(counters[name] + 1)
        return m
