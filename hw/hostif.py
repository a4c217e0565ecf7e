"""Host command processor: the accelerator's one word-stream interface.

Every command is a header word (:data:`hw.isa.header_layout`) and an address word, then:

- ``HELLO``: returns ``len(hello)`` words describing the generated hardware;
- ``WRITE target addr count``: ``count`` entries of ``words_for(entry bits)`` words each
  (little-endian), written to consecutive addresses, each word into its own 32-bit slice of the
  entry as it arrives (``w_data`` and one enable per slice, registered: no entry-wide buffer);
- ``READ SPAD addr count``: returns ``count`` scratchpad words the same way. The tables
  (instructions, requantiser and vector parameters) are write-only: their wide entries would all
  have to meet in one reply multiplexer, which was a tenth of the 8x8 board build's routing
  congestion; the link refuses a READ of them (:class:`hw.isa.Nak` ``COMMAND``);
- ``RUN pc``: starts the program at ``pc``; one status word (:data:`hw.isa.status_layout`) when
  it retires ``END``;
- ``STATUS``: returns :data:`hw.isa.STATUS_WORDS`: the last RUN's status word (0 before the
  first), the clock cycles since reset, the performance counters.

``idle`` is high while it waits for a header word. The link (:mod:`hw.link`: framing, CRC,
lengths checked before a word reaches here) wraps this stream; here every word is trusted.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .isa import (
    ADDR_BITS,
    READABLE,
    STATUS_OK,
    STATUS_WORDS,
    WORD_BITS,
    HostCmd,
    Target,
    header_layout,
    status_layout,
    words_for,
)

__all__ = ["HostInterface"]


class HostInterface(wiring.Component):
    """``entry_bits``: bits per entry of each :class:`~hw.isa.Target`; ``hello``: the constant
    words HELLO returns; ``n_perf``: number of counters.

    Writes: ``w_addr``, ``w_data`` (one host word) and per target ``<target>_wen`` (one enable per
    32-bit slice of its entry). Reads (scratchpad only): ``r_addr``, then ``r_data``
    ``read_latency`` cycles later (the read port is always enabled)."""

    def __init__(self, entry_bits: dict, hello: list, n_perf: int, read_latency: int = 1):
        self.entry_bits, self.hello, self.n_perf = dict(entry_bits), list(hello), n_perf
        self.read_latency = read_latency
        members = {"i": In(stream.Signature(WORD_BITS)), "o": Out(stream.Signature(WORD_BITS)),
                   "run": Out(1), "pc": Out(ADDR_BITS), "done": In(1), "stop_pc": In(ADDR_BITS),
                   "errors": In(8), "idle": Out(1),
                   "perf": In(32).array(n_perf),
                   "w_addr": Out(ADDR_BITS), "w_data": Out(WORD_BITS),
                   "r_addr": Out(ADDR_BITS),
                   "r_data": In(self.entry_bits[READABLE])}
        for t in Target:
            members[f"{t.name.lower()}_wen"] = Out(words_for(self.entry_bits[t]))
        super().__init__(members)

    def wen(self, t: Target):
        return getattr(self, f"{t.name.lower()}_wen")

    def elaborate(self, platform):
        m = Module()
        max_words = max(words_for(b) for b in self.entry_bits.values())
        read_words = words_for(self.entry_bits[READABLE])
        buf = Signal(read_words * WORD_BITS)        # the scratchpad word being read back
        hdr = Signal(header_layout)
        addr = Signal(ADDR_BITS)
        count = Signal(24)
        word = Signal(range(max_words + 1))
        waited = Signal(range(self.read_latency))      # cycles of a scratchpad read so far
        n_words = Array(Const(words_for(self.entry_bits[t]), range(max_words + 1))
                        for t in Target)[hdr.target.as_value()]
        out_idx = Signal(range(max(len(self.hello), self.n_perf + 2) + 1))
        status = Signal(status_layout)          # of the last RUN
        uptime = Signal(32)
        m.d.sync += uptime.eq(uptime + 1)
        m.d.comb += [self.pc.eq(addr), self.r_addr.eq(addr)]
        m.d.sync += [self.wen(t).eq(0) for t in Target]

        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += [self.i.ready.eq(1), self.idle.eq(1)]
                with m.If(self.i.valid):
                    m.d.sync += [hdr.eq(self.i.payload), word.eq(0), out_idx.eq(0)]
                    m.next = "ADDR"
            with m.State("ADDR"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [addr.eq(self.i.payload), count.eq(hdr.count)]
                    with m.Switch(hdr.cmd):
                        with m.Case(HostCmd.HELLO):
                            m.next = "HELLO"
                        with m.Case(HostCmd.WRITE):
                            m.next = "WRITE"
                        with m.Case(HostCmd.READ):
                            m.next = "READ"
                        with m.Case(HostCmd.RUN):
                            m.next = "RUN"
                        with m.Case(HostCmd.STATUS):
                            m.next = "STATUS"
                        with m.Default():
                            m.next = "HEADER"
            with m.State("HELLO"):
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.eq(Array(Const(w, 32) for w in self.hello)[out_idx])]
                with m.If(self.o.ready):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(out_idx == len(self.hello) - 1):
                        m.next = "HEADER"
            with m.State("WRITE"):
                with m.If(count == 0):
                    m.next = "HEADER"
                with m.Else():
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(self.i.valid):
                        # word k of the entry goes straight to slice k of the target's memory
                        m.d.sync += [self.w_data.eq(self.i.payload), self.w_addr.eq(addr),
                                     word.eq(word + 1)]
                        slice_en = Const(1, max_words) << word
                        for t in Target:
                            with m.If(hdr.target == t):
                                m.d.sync += self.wen(t).eq(slice_en[:len(self.wen(t))])
                        with m.If(word + 1 == n_words):
                            m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), word.eq(0)]
            with m.State("READ"):
                with m.If(count == 0):
                    m.next = "HEADER"
                with m.Elif(waited == self.read_latency - 1):
                    m.d.sync += waited.eq(0)
                    m.next = "FETCHED"
                with m.Else():
                    m.d.sync += waited.eq(waited + 1)
            with m.State("FETCHED"):
                m.d.sync += [buf.eq(self.r_data), word.eq(0)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1),
                             self.o.payload.eq(buf.word_select(word, WORD_BITS))]
                with m.If(self.o.ready):
                    m.d.sync += word.eq(word + 1)
                    with m.If(word + 1 == read_words):
                        m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                        m.next = "READ"
            with m.State("RUN"):
                m.d.comb += self.run.eq(1)
                m.next = "RUNNING"
            with m.State("RUNNING"):
                with m.If(self.done):
                    m.d.sync += [status.code.eq(STATUS_OK), status.errors.eq(self.errors),
                                 status.pc.eq(self.stop_pc)]
                    m.next = "RAN"
            with m.State("RAN"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(status)]
                with m.If(self.o.ready):
                    m.next = "HEADER"
            with m.State("STATUS"):
                assert STATUS_WORDS[:2] == ("status", "uptime")
                words = Array([status.as_value(), uptime, *self.perf])
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(words[out_idx])]
                with m.If(self.o.ready):
                    m.d.sync += out_idx.eq(out_idx + 1)
                    with m.If(out_idx == self.n_perf + 1):
                        m.next = "HEADER"
        return m
