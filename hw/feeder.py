"""Scratchpad readers: turn instruction fields into operand streams (see :mod:`hw.isa` for the
memory layout).

- :class:`Transposer` — columns of a blocked row-major tensor (the A operand of every GEMM, the
  keys of ``Q K^T``): reads ``V`` consecutive words (``V`` rows, one block of ``V`` columns) into
  one of two register banks and emits that block's columns from it while the other bank fills, so a
  full block streams at one column per cycle.
- :class:`WordReader` — one word per beat: direct B rows (weights, values; lanes rotated by
  ``col``) or the rows of a row operation (``count`` valid lanes on a row's last word).

Both readers iterate the same tile order as the array's drain: ``for outer: for inner:`` and take
their row (or column) block from one of the two loop counters (``use_outer``).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .isa import ADDR_BITS, DIM_BITS, ELEM_BITS
from .pipeline import delay, register, replicas, vector_layout

__all__ = ["Transposer", "WordReader", "job_signature"]


def job_members() -> dict:
    """The loop description every reader takes (latched on ``start``)."""
    return {"start": In(1), "busy": Out(1),
            "base": In(ADDR_BITS), "stride": In(ADDR_BITS), "col": In(DIM_BITS),
            "k": In(DIM_BITS), "n_outer": In(DIM_BITS), "n_inner": In(DIM_BITS),
            "use_outer": In(1),
            "addr": Out(ADDR_BITS)}


def job_signature(lanes: int, **extra) -> wiring.Signature:
    return wiring.Signature({**job_members(),
                             "data": In(data.ArrayLayout(signed(ELEM_BITS), lanes)),
                             "o": Out(stream.Signature(vector_layout(ELEM_BITS, lanes))),
                             **extra})


class _Job:
    """A reader's latched job: ``base``, ``stride``, ``col``, ``k``, and the loop nest ``for outer <
    n_outer: for inner < n_inner`` with the selected block index. ``started`` is high the cycle
    after ``start``, when the latched fields are valid."""

    def __init__(self, m: Module, job, lanes: int):
        self.m, self.job = m, job
        self.base, self.stride = Signal(ADDR_BITS), Signal(ADDR_BITS)
        self.col, self.k = Signal(range(lanes)), Signal(DIM_BITS)
        self.started = Signal()
        m.d.sync += self.started.eq(job.start)
        self.outer = Signal(DIM_BITS, name="outer")
        self.inner = Signal(DIM_BITS, name="inner")
        self.n_outer, self.n_inner = Signal(DIM_BITS), Signal(DIM_BITS)
        self.use_outer = Signal()
        self.block = Mux(self.use_outer, self.outer, self.inner)
        wrap = self.inner + 1 >= self.n_inner
        self.final = wrap & (self.outer + 1 >= self.n_outer)
        self.next_block = Mux(self.use_outer, Mux(wrap, self.outer + 1, self.outer),
                              Mux(wrap, 0, self.inner + 1))

    def latch(self):
        j = self.job
        return [self.outer.eq(0), self.inner.eq(0), self.n_outer.eq(j.n_outer),
                self.n_inner.eq(j.n_inner), self.use_outer.eq(j.use_outer),
                self.base.eq(j.base), self.stride.eq(j.stride), self.col.eq(j.col),
                self.k.eq(j.k)]

    def step(self):
        m = self.m
        with m.If(self.inner + 1 < self.n_inner):
            m.d.sync += self.inner.eq(self.inner + 1)
        with m.Else():
            m.d.sync += [self.inner.eq(0), self.outer.eq(self.outer + 1)]


class Transposer(wiring.Component):
    """Columns ``col .. col + k`` of rows ``block * V .. block * V + V`` of a blocked tensor, per
    tile of the loop nest; ``last`` marks each tile's final column. ``base`` addresses the block
    holding column ``col`` (``col < V``). ``data`` is the word at ``addr`` ``read_latency``
    cycles later."""

    def __init__(self, lanes: int, read_latency: int = 1):
        if lanes < 2 or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two >= 2, not {lanes}")
        self.lanes, self.read_latency = lanes, read_latency
        super().__init__(job_signature(lanes))

    def elaborate(self, platform):
        m = Module()
        V = self.lanes
        log_v = V.bit_length() - 1
        loops = _Job(m, self, V)
        base, stride, col, k, started = (loops.base, loops.stride, loops.col, loops.k,
                                         loops.started)
        elem = signed(ELEM_BITS)

        # two banks of V x V elements, with the column range each holds
        banks = [[[Signal(elem, name=f"bank{b}_r{r}_c{c}") for c in range(V)] for r in range(V)]
                 for b in range(2)]
        full = [Signal(name=f"full{b}") for b in range(2)]
        lo = [Signal(range(V + 1), name=f"lo{b}") for b in range(2)]
        hi = [Signal(range(V + 1), name=f"hi{b}") for b in range(2)]
        tile_last = [Signal(name=f"tile_last{b}") for b in range(2)]

        # ---- loader --------------------------------------------------------------------------
        blk = Signal(ADDR_BITS)             # address of row 0 of the block being loaded
        pos = Signal(range(V))              # first column in this block
        left = Signal(DIM_BITS)             # columns of the tile not yet loaded
        row = Signal(range(V))
        wb = Signal()                       # bank being written
        loading, all_loaded = Signal(), Signal(init=1)
        # the block's column count, and whether it ends the tile, are registers that follow
        # ``left`` and ``pos`` a cycle later (a compare, then ``left - n_cols`` and the next tile's
        # address in one cycle was the 8x8 board build's path on two seeds): they are read at
        # the block's last row, at least V >= 2 cycles after ``left`` and ``pos`` change
        n_cols = Signal(range(V + 1))
        ends_tile = Signal()
        m.d.sync += [n_cols.eq(Mux(left < V - pos, left, V - pos)), ends_tile.eq(left <= V - pos)]

        tile_base = base + (loops.block << log_v)
        with m.If(self.start):
            m.d.sync += [all_loaded.eq(0), loading.eq(0), row.eq(0)]
            m.d.sync += loops.latch()
        # the first tile's registers are set one cycle after start, from the latched job
        with m.If(started):
            m.d.sync += [blk.eq(tile_base), pos.eq(col), left.eq(k), loading.eq(k != 0),
                         all_loaded.eq(k == 0)]

        # registered write of the returning row
        wr_en, wr_row, wr_bank, wr_done = Signal(), Signal(range(V)), Signal(), Signal()
        m.d.sync += [wr_en.eq(0), wr_done.eq(0)]
        m.d.comb += self.addr.eq(blk + row)
        next_tile = Signal()
        with m.If(loading & ~Array(full)[wb]):
            m.d.sync += [wr_en.eq(1), wr_row.eq(row), wr_bank.eq(wb)]
            with m.If(row == V - 1):
                m.d.sync += [row.eq(0), wr_done.eq(1), wb.eq(~wb),
                             Array(lo)[wb].eq(pos), Array(hi)[wb].eq(pos + n_cols),
                             Array(tile_last)[wb].eq(ends_tile),
                             left.eq(left - n_cols), pos.eq(0), blk.eq(blk + stride)]
                with m.If(ends_tile):
                    m.d.comb += next_tile.eq(1)
            with m.Else():
                m.d.sync += row.eq(row + 1)
        with m.If(next_tile):
            loops.step()
            with m.If(loops.final):
                m.d.sync += [loading.eq(0), all_loaded.eq(1)]
            with m.Else():
                m.d.sync += [blk.eq(base + (loops.next_block << log_v)), pos.eq(col),
                             left.eq(k)]
        # the returning word is registered first (the block RAM's output reaches a register of
        # its own, not the banks' 2V^2 enables across the chip), then written into its bank row;
        # the read's row, bank and flags follow it through the memory's extra cycles
        word = register(m, self.data, "word")
        back, in_flight = Cat(wr_en, wr_row, wr_bank, wr_done), wr_en
        for k in range(self.read_latency - 1):
            back = register(m, back, f"returning{k}")
            in_flight = in_flight | back[0]
        put_en, put_row, put_bank, put_done = Signal(), Signal(range(V)), Signal(), Signal()
        m.d.sync += Cat(put_en, put_row, put_bank, put_done).eq(back)
        with m.If(put_en):
            for b in range(2):
                for r in range(V):
                    with m.If((put_bank == b) & (put_row == r)):
                        m.d.sync += [banks[b][r][c].eq(word[c]) for c in range(V)]
        with m.If(put_done):
            m.d.sync += Array(full)[put_bank].eq(1)

        # ---- emitter -------------------------------------------------------------------------
        # The column being emitted and the bank it is read from are registers, computed a cycle
        # ahead and copied per row (each copy steers one row's 2V:1 element multiplexer), so no
        # logic sits between a flip-flop and the multiplexers (the lo/idx/primed decode in front
        # of them was the 8x8 board build's critical path). A bank's ``lo`` is written at least
        # a cycle before the bank turns full, and ``column`` follows ``lo`` until the bank's
        # first column is taken, so it is right when the bank becomes valid.
        rb = Signal()                       # bank being read
        column = Signal(range(V))           # column being emitted
        primed = Signal()                   # a column of the current bank has been taken
        cur_full = Array(full)[rb]
        o = self.o
        fire = o.valid & o.ready
        # ``column + 1 == hi[rb]`` is a register computed beside ``column`` (a bank's ``hi`` is
        # written two cycles before it turns full and then holds): the compare in front of the
        # tile's ``last`` reached the array's handshake and the other transposer's column
        # selects (12.9 ns at 8x8)
        end = Signal(name="end")
        rb_next, column_next = Signal(), Signal(range(V))
        m.d.comb += [rb_next.eq(rb), column_next.eq(column)]
        with m.If(fire):
            with m.If(end):
                m.d.comb += [rb_next.eq(~rb), column_next.eq(Array(lo)[~rb])]
                m.d.sync += [Array(full)[rb].eq(0), primed.eq(0)]
            with m.Else():
                m.d.comb += column_next.eq(column + 1)
                m.d.sync += primed.eq(1)
        with m.Elif(~primed):
            m.d.comb += column_next.eq(Array(lo)[rb])
        with m.If(self.start):
            m.d.comb += rb_next.eq(0)
        m.d.sync += [rb.eq(rb_next), column.eq(column_next),
                     end.eq(column_next + 1 == Array(hi)[rb_next])]
        selects = replicas(m, Cat(column_next, rb_next), V, "tsel")
        m.d.comb += [o.valid.eq(cur_full), o.payload.count.eq(V),
                     o.payload.last.eq(Array(tile_last)[rb] & end)]
        for r in range(V):
            m.d.comb += o.payload.data[r].eq(Array(banks[0][r] + banks[1][r])[selects[r]])
        with m.If(self.start):
            m.d.sync += [wb.eq(0), primed.eq(0), full[0].eq(0), full[1].eq(0)]
        m.d.comb += self.busy.eq(~all_loaded | full[0] | full[1] | in_flight | put_en | started)
        return m


class WordReader(wiring.Component):
    """One scratchpad word per beat, through a small FIFO (reads are issued only when it has room,
    so back-pressure never loses a word).

    ``rows`` mode (``row_mode``): for each of ``n_outer`` rows ``t``, words ``base + j * stride +
    t`` for the ``ceil(k / V)`` blocks ``j``; ``count`` valid lanes on the row's last word.
    Direct mode: for each tile, words ``base + block * stride + j`` for ``j < k``; lane ``n``
    carries element ``(n + col) % V``; ``last`` on the tile's final word.
    """

    DEPTH = 8           # covers the read, its register and the FIFO latency at a word per cycle

    def __init__(self, lanes: int, read_latency: int = 1):
        if lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two, not {lanes}")
        self.lanes, self.read_latency = lanes, read_latency
        super().__init__(job_signature(lanes, row_mode=In(1)))

    def elaborate(self, platform):
        m = Module()
        V = self.lanes
        log_v = V.bit_length() - 1
        loops = _Job(m, self, V)
        base, stride, col, k, started = (loops.base, loops.stride, loops.col, loops.k,
                                         loops.started)
        layout = vector_layout(ELEM_BITS, V)
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=layout.size, depth=self.DEPTH)

        row_mode = Signal()
        j = Signal(DIM_BITS)                 # word within the tile / block within the row
        line = Signal(ADDR_BITS)             # address of word j
        active, done = Signal(), Signal(init=1)
        n_words = Mux(row_mode, (k + V - 1) >> log_v, k)
        is_last = j + 1 == n_words

        with m.If(self.start):
            m.d.sync += [row_mode.eq(self.row_mode), j.eq(0), done.eq(0),
                         active.eq(0)]
            m.d.sync += loops.latch()
        # direct mode steps ``block * stride`` by additions (no multiplier in the issue path)
        offset = Signal(ADDR_BITS)                   # block * stride of the current tile
        wrap = loops.inner + 1 >= loops.n_inner
        next_offset = Mux(loops.use_outer, Mux(wrap, offset + stride, offset),
                          Mux(wrap, 0, offset + stride))
        with m.If(started):                          # outer = inner = 0: block 0
            m.d.sync += [line.eq(base), offset.eq(0), active.eq(n_words != 0),
                         done.eq(n_words == 0)]

        # credits: FIFO level plus the reads in flight (``read_latency`` cycles of the read,
        # then its word registered: the block RAM's output has a register to itself before the
        # lane rotation) must leave room
        issue = Signal()
        flight = [Signal(name=f"inflight{k}") for k in range(self.read_latency)]
        arrived = Signal()
        room = q.level + sum(flight) + arrived < self.DEPTH
        m.d.comb += [issue.eq(active & room), self.addr.eq(line)]
        m.d.sync += [a.eq(b) for a, b in zip(flight + [arrived], [issue] + flight)]
        inflight = Cat(flight).any()
        word = register(m, self.data, "word")
        meta_last, meta_count = Signal(), Signal(range(V + 1))
        tail = k - (j << log_v)
        with m.If(issue):
            m.d.sync += [meta_last.eq(is_last),
                         meta_count.eq(Mux(row_mode & is_last, tail, V))]
            with m.If(is_last):
                m.d.sync += j.eq(0)
                with m.If(loops.final):
                    m.d.sync += [active.eq(0), done.eq(1)]
                loops.step()
                m.d.sync += [line.eq(base + Mux(row_mode, loops.next_block, next_offset)),
                             offset.eq(next_offset)]
            with m.Else():
                m.d.sync += [j.eq(j + 1), line.eq(line + Mux(row_mode, stride, 1))]

        beat = Signal(layout)
        arrived_last, arrived_count = Signal(), Signal(range(V + 1))
        meta = delay(m, Cat(meta_last, meta_count), self.read_latency - 1, "meta")
        m.d.sync += Cat(arrived_last, arrived_count).eq(meta)
        m.d.comb += [beat.last.eq(arrived_last), beat.count.eq(arrived_count)]
        for n in range(V):
            m.d.comb += beat.data[n].eq(Array(word)[(n + col)[:log_v]])
        m.d.comb += [q.w_en.eq(arrived), q.w_data.eq(beat.as_value())]
        m.d.comb += [self.o.valid.eq(q.r_rdy), self.o.payload.eq(q.r_data), q.r_en.eq(self.o.ready)]
        m.d.comb += self.busy.eq(~done | inflight | arrived | q.r_rdy | started)
        return m
