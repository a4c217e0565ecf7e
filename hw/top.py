"""The accelerator: array, vector units, scratchpad, tables and controller behind one word stream.

::

   UART pins ─► Uart (SerialAccelerator, a board's top) ─►
   host bytes ─► Link (frames, CRC; LinkedAccelerator) ─►
   host words ─► HostInterface ─► scratchpad / instruction memory / tables, RUN, PERF
                                  │
   Controller ─► start ─► Transposer A ──────────────► SystolicArray ──────────────────────┐
                        ─► Transposer B │ WordReader B ─►                                   │
                        ─► WordReader rows ─► LaneSplitter ─► Shiftmax | GELU | LayerNorm │
                                                                   ─► LaneGatherer ─────────┤
                                                                                           ▼
                          requant table, residual word ───────────────────────────────► Drain ─►
                                                                                     scratchpad

Words are ``V = cols`` elements (the array's width); the vector units take ``L = lanes`` (a divisor
of ``V``) per beat, so a word is ``V / L`` beats for them (no gearbox when ``L = V``).

Memory depths (:class:`hw.scratchpad.Sizes`) are construction arguments, chosen by the compiler for
a model (:meth:`gen.compiler.Program.sizes`).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from .checks import validating
from .config import AcceleratorConfig
from .controller import Controller
from .drain import Drain, drain_layout
from .feeder import Transposer, WordReader
from .gearbox import LaneGatherer, LaneSplitter
from .gelu import GeluUnit
from .hostif import HostInterface
from .isa import (
    ELEM_BITS,
    PERF_COUNTERS,
    STATUS_WORDS,
    WORD_BITS,
    Opcode,
    Target,
    instr_layout,
    words_for,
)
from .layernorm import LayerNorm
from .link import Link, LinkParams
from .pipeline import QUEUE_SLICE_BITS, register, replicas
from .rowbuffer import stream_fifo
from .rowparallel import RowParallel
from .scratchpad import (
    Sizes,
    check_core,
    hello_words,
    ptab_layout,
    spad_layout,
    table_geometry,
    vtab_layout,
)
from .scratchpad_memory import DIRECT, REGISTERED, ScratchpadMemory
from .shiftgelu import ShiftGelu
from .softmax import Shiftmax
from .systolic import SystolicArray
from .uart import COUNTER_BITS, Uart

__all__ = ["Accelerator", "LinkedAccelerator", "SerialAccelerator", "VEC_IN_BITS"]

VEC_IN_BITS = 16                # the vector units take any scratchpad element


def entry_bits(cfg: AcceleratorConfig) -> dict:
    """Bits per entry of each memory the host reads and writes."""
    return {Target.SPAD: spad_layout(cfg).size, Target.IMEM: instr_layout.size,
            Target.PTAB: ptab_layout(cfg).size, Target.VTAB: vtab_layout(cfg).size}


class Accelerator(wiring.Component):
    """Members: ``i``/``o`` (32-bit host word streams, :mod:`hw.hostif`), ``idle`` (waiting for
    a host command), ``error`` (sticky: a vector unit saw a row longer than it buffers).
    ``link``: the parameters HELLO reports about the link in front of it."""

    def __init__(self, config: AcceleratorConfig, sizes: Sizes = Sizes(),
                 link: LinkParams = LinkParams()):
        with validating(self):
            check_core(config)
        self._cfg, self.sizes, self.link = config, sizes, link
        super().__init__({"i": In(stream.Signature(WORD_BITS)),
                          "o": Out(stream.Signature(WORD_BITS)), "idle": Out(1),
                          "error": Out(1)})

    def _units(self):
        cfg = self._cfg
        L = cfg.lanes               # the vector units' width
        copies = cfg.row_units
        smx = RowParallel(lambda: Shiftmax(mode=cfg.mode, lanes=L, in_bits=VEC_IN_BITS,
                                           max_row=cfg.max_row), copies)
        if cfg.mode == "ivit":
            gelu = RowParallel(lambda: ShiftGelu(lanes=L, in_bits=VEC_IN_BITS,
                                                 max_row=cfg.max_row), copies)
        else:
            gelu = GeluUnit(lanes=L, in_bits=VEC_IN_BITS)      # element-wise: no row latency
        ln = RowParallel(lambda: LayerNorm(mode=cfg.mode, lanes=L, in_bits=VEC_IN_BITS,
                                           max_row=cfg.max_channels,
                                           split_engines=cfg.split_engines), copies)
        return smx, gelu, ln

    def elaborate(self, platform):
        cfg, sz = self._cfg, self.sizes
        V, L = cfg.cols, cfg.lanes
        m = Module()

        # ---- memories ------------------------------------------------------------------------
        # read ports A (transposer A, row reader, host) and B (transposer B, word reader) take
        # their address registered, copied per element; R (the drain's residual) reads directly
        m.submodules.spad = spad = ScratchpadMemory(V, sz.spad, (REGISTERED, REGISTERED, DIRECT))
        spad_w = spad.write
        spad_ra, spad_rb, spad_rr = spad.read
        # the tables are written by the host one 32-bit word (slice) at a time; a requantiser
        # entry is stored as V / R rows of R lanes, one per pass of the drain's requantisers
        tables = {}
        for t, (rows, depth, row_bits) in table_geometry(cfg, sz).items():
            mem = memory.Memory(shape=row_bits, depth=depth, init=[])
            m.submodules[t.name.lower()] = mem
            tables[t] = (mem.write_port(granularity=WORD_BITS), mem.read_port(), rows)
        (imem_w, imem_r, _), (ptab_w, ptab_r, _), (vtab_w, vtab_r, _) = tables.values()

        # ---- blocks --------------------------------------------------------------------------
        smx, gelu, ln = self._units()
        x_bits = max(cfg.acc_bits, gelu.out_bits, 32, ELEM_BITS) + 1
        m.submodules.ctrl = ctrl = Controller()
        m.submodules.host = host = HostInterface(entry_bits(cfg), hello_words(cfg, sz, self.link),
                                                 len(PERF_COUNTERS), read_latency=REGISTERED)
        m.submodules.ta = ta = Transposer(V, read_latency=REGISTERED)
        m.submodules.tb = tb = Transposer(V, read_latency=REGISTERED)
        m.submodules.wb = wb = WordReader(V, read_latency=REGISTERED)
        m.submodules.wr = wr = WordReader(V, read_latency=REGISTERED)
        m.submodules.array = array = SystolicArray(cfg)
        m.submodules.softmax, m.submodules.gelu, m.submodules.layernorm = smx, gelu, ln
        m.submodules.drain = drain = Drain(cfg, x_bits)
        connect(m, wiring.flipped(self.i), host.i)
        connect(m, host.o, wiring.flipped(self.o))
        m.d.comb += self.idle.eq(host.idle)

        # ---- host <-> memories, controller ---------------------------------------------------
        running = ~ctrl.done
        m.d.comb += [ctrl.run.eq(host.run), ctrl.pc.eq(host.pc), host.done.eq(ctrl.done),
                     host.stop_pc.eq(ctrl.stop_pc)]
        m.d.comb += [host.perf[n].eq(getattr(ctrl, f"perf_{name}"))
                     for n, name in enumerate(PERF_COUNTERS)]
        for t, (w, _, rows) in tables.items():
            # host word k of an entry: row k // row_words of the entry, slice k % row_words
            row_words, wen = len(w.en), host.wen(t)
            groups = [wen[r * row_words:(r + 1) * row_words] for r in range(rows)]
            row = Signal(range(rows), name=f"{t.name.lower()}_row")
            slice_en = groups[0]
            for r, g in enumerate(groups[1:], 1):
                with m.If(g.any()):
                    m.d.comb += row.eq(r)
                slice_en = slice_en | g
            # registered beside each table: the host's word reaching the tables' LUT RAM across
            # the chip was the 8x8 board build's path (12.5 ns of routing); the host never reads
            # a table, and a RUN comes many cycles after its last write
            m.d.sync += [w.addr.eq((host.w_addr << (rows.bit_length() - 1)) | row),
                         w.data.eq(host.w_data.replicate(row_words)), w.en.eq(slice_en)]
        # both tables read every cycle (their addresses hold from the cycle before the data is
        # taken): the controller's read enable reaching the vector table's 1 280 output
        # registers' clock enables was the 8x8 board build's path (8.5 ns of routing)
        # the instruction word registered once more (the controller takes it two cycles after
        # its address, see :class:`~hw.controller.Controller`)
        m.d.comb += [imem_r.addr.eq(ctrl.i_addr),
                     ctrl.i_data.eq(register(m, imem_r.data[:instr_layout.size], "i_word"))]
        m.d.comb += vtab_r.addr.eq(ctrl.v_addr)
        # the parameters are latched the cycle after their read (the controller's LATCH state),
        # in slices with their own copy of the latch flag: one enable decoded from the
        # controller's state reaching every parameter register was the 8x8 board's path (7.9 ns
        # of routing after the decode)
        vparams = Signal(vtab_layout(cfg))
        flat, size = vparams.as_value(), vparams.shape().size
        latches = replicas(m, ctrl.v_en, -(-size // QUEUE_SLICE_BITS), "v_latch",
                           reset_less=False)
        for k, latch in enumerate(latches):
            at = slice(k * QUEUE_SLICE_BITS, min(size, (k + 1) * QUEUE_SLICE_BITS))
            with m.If(latch):
                m.d.sync += flat[at].eq(vtab_r.data[at])
        m.d.comb += [smx.params.eq(vparams.softmax), gelu.params.eq(vparams.gelu)]
        if "load" in gelu.signature.members:        # the dyad GELU's table copies refresh
            m.d.comb += gelu.load.eq(latches[0])

        # ---- decode into engine jobs ---------------------------------------------------------
        ins = ctrl.instr
        log_v = V.bit_length() - 1
        mb = (ins.m + V - 1) >> log_v            # row tiles
        nb = (ins.n + V - 1) >> log_v            # column blocks
        is_gemm = ins.op == Opcode.GEMM
        is_vec = ~is_gemm
        start = ctrl.start
        m.d.comb += [ta.start.eq(start & is_gemm), ta.base.eq(ins.a_base),
                     ta.stride.eq(ins.a_stride), ta.col.eq(ins.a_col), ta.k.eq(ins.k),
                     ta.n_outer.eq(nb), ta.n_inner.eq(mb), ta.use_outer.eq(0)]
        for rd in (tb, wb):
            m.d.comb += [rd.base.eq(ins.b_base), rd.stride.eq(ins.b_stride),
                         rd.col.eq(ins.b_col), rd.k.eq(ins.k), rd.n_outer.eq(nb),
                         rd.n_inner.eq(mb), rd.use_outer.eq(1)]
        m.d.comb += [tb.start.eq(start & is_gemm & ins.b_trans),
                     wb.start.eq(start & is_gemm & ~ins.b_trans), wb.row_mode.eq(0)]
        m.d.comb += [wr.start.eq(start & is_vec), wr.base.eq(ins.a_base),
                     wr.stride.eq(ins.a_stride), wr.col.eq(0), wr.k.eq(ins.n),
                     wr.n_outer.eq(ins.m), wr.n_inner.eq(1), wr.use_outer.eq(1),
                     wr.row_mode.eq(1)]
        m.d.comb += [drain.start.eq(start), drain.gemm.eq(is_gemm), drain.m.eq(ins.m),
                     drain.n.eq(ins.n), drain.n_inner.eq(mb), drain.wide.eq(ins.wide),
                     drain.residual.eq(ins.residual & is_gemm), drain.rm.eq(ins.rm),
                     drain.re.eq(ins.re), drain.o_base.eq(ins.o_base),
                     drain.o_stride.eq(ins.o_stride), drain.o_lane.eq(ins.o_lane),
                     drain.r_base.eq(ins.r_base), drain.r_stride.eq(ins.r_stride),
                     drain.p_index.eq(ins.p_index)]

        # ---- scratchpad ports ----------------------------------------------------------------
        # A: transposer A (GEMM) | row reader (vector ops) | host; B: transposer B | word reader
        # Every reader takes a read's data a fixed number of cycles after its address (its
        # port's latency), so the read ports are always enabled: no enable logic fans out to the
        # replicas' block RAMs (the host's read enable through this multiplexer was a 15.6 ns
        # path at 8x8).
        with m.If(running & is_gemm):
            m.d.comb += spad_ra.addr.eq(ta.addr)
        with m.Elif(running):
            m.d.comb += spad_ra.addr.eq(wr.addr)
        with m.Else():
            m.d.comb += spad_ra.addr.eq(host.r_addr)
        m.d.comb += [ta.data.eq(spad_ra.data), wr.data.eq(spad_ra.data),
                     host.r_data.eq(spad_ra.data)]
        m.d.comb += [spad_rb.addr.eq(Mux(ins.b_trans, tb.addr, wb.addr)),
                     tb.data.eq(spad_rb.data), wb.data.eq(spad_rb.data)]
        m.d.comb += [spad_rr.addr.eq(drain.r_addr), drain.r_data.eq(spad_rr.data)]
        m.d.comb += [ptab_r.addr.eq(drain.p_addr), ptab_r.en.eq(1),
                     drain.p_data.eq(ptab_r.data)]
        # the host's write: a host word is WORD_BITS // ELEM_BITS elements, its slice's enable
        # covers them; registered first, like the tables' writes (a read back or a RUN comes
        # many cycles later)
        per_word = WORD_BITS // ELEM_BITS
        host_addr, host_data, host_en = (register(m, v, f"spad_host_{n}") for n, v in (
            ("addr", host.w_addr), ("data", host.w_data.replicate(V // per_word)),
            ("en", Cat(host.wen(Target.SPAD)[e // per_word] for e in range(V)))))
        with m.If(running):
            m.d.comb += [spad_w.addr.eq(drain.w_addr), spad_w.data.eq(drain.w_data),
                         spad_w.en.eq(drain.w_en)]
        with m.Else():
            m.d.comb += [spad_w.addr.eq(host_addr), spad_w.data.eq(host_data),
                         spad_w.en.eq(host_en)]

        # ---- array operands ------------------------------------------------------------------
        b_src = ins.b_trans
        b_valid = Mux(b_src, tb.o.valid, wb.o.valid)
        m.d.comb += [array.a.valid.eq(ta.o.valid), ta.o.ready.eq(array.a.ready),
                     array.a.payload.last.eq(ta.o.payload.last),
                     array.b.valid.eq(b_valid),
                     tb.o.ready.eq(array.b.ready & b_src), wb.o.ready.eq(array.b.ready & ~b_src)]
        m.d.comb += [array.a.payload.data[r].eq(ta.o.payload.data[r]) for r in range(V)]
        m.d.comb += [array.b.payload[c].eq(Mux(b_src, tb.o.payload.data[c],
                                               wb.o.payload.data[c])) for c in range(V)]

        # ---- vector units: the row reader's words split into L-lane beats ---------------------
        rows_in = wr.o
        if L < V:
            m.submodules.split = split = LaneSplitter(ELEM_BITS, V, L)
            # a small FIFO in front of the splitter too: the splitter's ready (its held word's
            # state and the FIFO after it) reached the row reader's FIFO read and its output
            # register's enable across the chip (8x8 board build: 12.3 ns of routing)
            words_w, words = stream_fifo(m, wr.o.payload.shape(), 4, "words_q")
            connect(m, wr.o, words_w)
            connect(m, words, split.i)
            # a small FIFO after the splitter: the instruction's unit selection decides which
            # unit's ready is taken, and that reached the splitter's whole held word (8x8 board
            # build: 13.5 ns of routing); the FIFO's write side is ready from its own level
            # (depth 4: with 3, YoWASP's ABC9 died on the 8x8 board netlist)
            split_w, rows_in = stream_fifo(m, split.o.payload.shape(), 4, "split_q")
            connect(m, split.o, split_w)
        units = {Opcode.SOFTMAX: smx, Opcode.GELU: gelu, Opcode.LAYERNORM: ln}
        # the instruction's unit as one registered flag each (the opcode is latched three cycles
        # before ``start``): the opcode's compare in front of the units' handshakes and the
        # output register's enable was a 13.9 ns path at 8x8
        unit_sel = {op: register(m, ins.op == op, f"sel_{op.name.lower()}") for op in units}
        for op, unit in units.items():
            sel = unit_sel[op]
            m.d.comb += [unit.i.valid.eq(rows_in.valid & sel), unit.i.payload.eq(rows_in.payload)]
            with m.If(sel):
                m.d.comb += rows_in.ready.eq(unit.i.ready)
        m.d.comb += self.error.eq(smx.error | ln.error
                                  | (gelu.error if hasattr(gelu, "error") else 0))
        m.d.comb += host.errors.eq(self.error)
        # the instruction's unit, registered (the selection by the instruction's opcode reaches
        # a register's data input, not the gatherer's enables: a 14.7 ns path at 8x8), then
        # gathered back into words
        unit_out = stream.Signature(drain_layout(L, x_bits)).create(path=("unit_out",))
        take = ~unit_out.valid | unit_out.ready
        for k, (op, unit) in enumerate(units.items()):
            with (m.Elif if k else m.If)(unit_sel[op]):
                m.d.comb += unit.o.ready.eq(take)
                with m.If(take):
                    m.d.sync += [unit_out.valid.eq(unit.o.valid),
                                 unit_out.payload.last.eq(unit.o.payload.last),
                                 unit_out.payload.count.eq(unit.o.payload.count)]
                    m.d.sync += [unit_out.payload.data[c].eq(unit.o.payload.data[c])
                                 for c in range(L)]
        with m.Else():
            with m.If(take):
                m.d.sync += unit_out.valid.eq(0)
        gathered = unit_out
        if L < V:
            m.submodules.gather = gather = LaneGatherer(x_bits, L, V)
            connect(m, unit_out, gather.i)
            gathered = gather.o
        # results wait in a small FIFO whose write side is ready from its own level: the drain's
        # ready went on through the gatherer to the unit output register's enable (12.9 ns of
        # routing at 8x8)
        results_w, results = stream_fifo(m, gathered.payload.shape(), 4, "results_q")
        connect(m, gathered, results_w)

        # ---- drain input: array rows or unit results, selected by the instruction and
        # registered (with a requantiser per word element the drain takes a beat every cycle and
        # the sources never wait; narrower, it takes one every cols / requant_lanes) -----------
        src = stream.Signature(drain.i.payload.shape()).create(path=("drain_src",))
        m.d.comb += src.ready.eq(~drain.i.valid | drain.i.ready)
        with m.If(is_gemm):
            m.d.comb += [src.valid.eq(array.o.valid), array.o.ready.eq(src.ready),
                         src.payload.last.eq(array.o.payload.last), src.payload.count.eq(V)]
            m.d.comb += [src.payload.data[c].eq(array.o.payload.data[c]) for c in range(V)]
        with m.Else():
            m.d.comb += [src.valid.eq(results.valid), results.ready.eq(src.ready),
                         src.payload.eq(results.payload)]
        with m.If(src.ready):
            m.d.sync += [drain.i.valid.eq(src.valid), drain.i.payload.eq(src.payload)]

        readers_busy = ta.busy | tb.busy | wb.busy | wr.busy
        m.d.comb += [ctrl.idle.eq(~readers_busy & drain.done),
                     ctrl.readers_idle.eq(~readers_busy), ctrl.drain_free.eq(drain.free),
                     ctrl.array_beat.eq(array.a.valid & array.a.ready),
                     ctrl.a_starved.eq(running & is_gemm & array.b.valid & ~array.a.valid),
                     ctrl.b_starved.eq(running & is_gemm & array.a.valid & ~array.b.valid),
                     ctrl.drain_row.eq(drain.row)]
        return m


class LinkedAccelerator(wiring.Component):
    """The accelerator behind its framed link (:mod:`hw.link`): ``rx``/``tx`` byte streams (a
    UART on a board, the simulation bridge in CI), ``idle`` (nothing in flight), ``error``."""

    def __init__(self, config: AcceleratorConfig, sizes: Sizes = Sizes(),
                 link: LinkParams = LinkParams()):
        self.core = Accelerator(config, sizes, link)
        self.link = link
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "idle": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg, core = self.core._cfg, self.core
        m.submodules.core = core
        m.submodules.link = link = Link(
            self.link, {t: words_for(b) for t, b in entry_bits(cfg).items()},
            len(hello_words(cfg, core.sizes, self.link)), len(STATUS_WORDS))
        connect(m, wiring.flipped(self.rx), link.rx)
        connect(m, link.tx, wiring.flipped(self.tx))
        connect(m, link.i, core.i)
        # reply words through a small FIFO: the host interface's wide shift register then
        # advances on a registered ready, not on the link's transmit handshake
        m.submodules.reply_fifo = reply_fifo = fifo.SyncFIFOBuffered(width=32, depth=2)
        connect(m, core.o, reply_fifo.w_stream)
        connect(m, reply_fifo.r_stream, link.o)
        m.d.comb += [link.host_idle.eq(core.idle), self.idle.eq(link.idle),
                     self.error.eq(core.error)]
        return m


class SerialAccelerator(wiring.Component):
    """The linked accelerator behind a UART (:mod:`hw.uart`) at ``link.baud`` from a
    ``link.clk_hz`` clock: what a board runs (its top adds clocking and pins) and what the
    pin-level simulation bridge drives. ``idle``: nothing in flight on the link or the line;
    ``error``: a unit reported an error; ``frame_errors``: bytes received with a bad stop bit."""

    def __init__(self, config: AcceleratorConfig, sizes: Sizes = Sizes(),
                 link: LinkParams = LinkParams()):
        self.linked = LinkedAccelerator(config, sizes, link)
        self.uart = Uart(link.clk_hz, link.baud)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "idle": Out(1),
                          "error": Out(1), "frame_errors": Out(COUNTER_BITS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.linked = linked = self.linked
        m.submodules.uart = uart = self.uart
        # a small FIFO before the transmitter keeps its bit-clock ready off the link's and host
        # interface's handshakes (a 22 ns path at 50 MHz without it)
        m.submodules.tx_fifo = tx_fifo = fifo.SyncFIFOBuffered(width=8, depth=4)
        connect(m, uart.o, linked.rx)
        connect(m, linked.tx, tx_fifo.w_stream)
        connect(m, tx_fifo.r_stream, uart.i)
        m.d.comb += [uart.rx.eq(self.rx), self.tx.eq(uart.tx),
                     self.idle.eq(linked.idle & ~uart.busy & ~tx_fifo.r_rdy),
                     self.error.eq(linked.error),
                     self.frame_errors.eq(uart.frame_errors)]
        return m
