"""The output path of every instruction: requantise a stream of ``V``-lane results (``V = cols``,
one scratchpad word) and write them into the scratchpad at their tensor positions (see
:mod:`hw.isa` for the layout).

Beats arrive in one of two orders:

- ``gemm``: accumulator rows of the array, tile by tile — ``for block: for row tile: V rows`` —
  so row ``t`` runs over ``n_inner * V`` rows before the column block ``blk`` advances;
- rows: ``M`` rows of ``ceil(N / V)`` beats each (``last`` on a row's final beat).

Per beat the drain reads the requantiser entry ``p_index + blk`` (per-lane ``m, e, b, c``) and, with
``residual``, the residual word at ``r_base + blk * r_stride + t``; the requantiser's result goes
to ``o_base + blk * o_stride + t`` with lanes rotated up by ``o_lane``, writing only lanes below
``N`` (``count`` on row beats) and rows below ``M``. The requantiser never stalls (the write port
is always free), so the write address simply travels beside it.

With ``R = requant_lanes`` narrower than the word, a word is held for ``V / R`` cycles and goes
through the requantisers ``R`` lanes at a time; the results are gathered back into the word,
which is written once, on its last part. ``i.ready`` is then low on all but the last of those
cycles (with ``R = V`` it is always high). The requantiser table stores an entry as ``V / R``
rows of ``R`` lanes (row ``entry * V / R + part``), so each part reads only its own lanes; the
residual word is kept from the first part.

A second job may be started while one drains (chained GEMMs): it waits in a one-deep queue
(``free`` is low while it is occupied) and becomes active after the current job's last row; the
fields the later stages need travel with each beat, so the switch never touches a beat in flight.
The job's fields must be stable from the cycle before ``start`` (the controller holds its
instruction for several). The job's end is counted in two levels, rows (gemm: tile rows) per
column block and blocks, so no product of the fields sits in front of the count.
"""
from __future__ import annotations

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .isa import ADDR_BITS, DIM_BITS, ELEM_BITS, ptab_lane_layout
from .pipeline import replicas
from .requant import Requantizer

__all__ = ["Drain", "drain_layout"]


def drain_layout(lanes: int, x_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(x_bits), lanes),
                              "count": range(lanes + 1), "last": 1})


class Drain(wiring.Component):
    def __init__(self, config: AcceleratorConfig, x_bits: int):
        self._cfg, self.x_bits = config, x_bits
        V = config.cols
        super().__init__({
            "i": In(stream.Signature(drain_layout(V, x_bits))),
            "start": In(1), "done": Out(1), "free": Out(1),
            "gemm": In(1), "m": In(DIM_BITS), "n": In(DIM_BITS), "n_inner": In(DIM_BITS),
            "wide": In(1), "residual": In(1), "rm": In(signed(32)), "re": In(6),
            "o_base": In(ADDR_BITS), "o_stride": In(ADDR_BITS), "o_lane": In(8),
            "r_base": In(ADDR_BITS), "r_stride": In(ADDR_BITS), "p_index": In(ADDR_BITS),
            "p_addr": Out(ADDR_BITS), "p_data": In(data.ArrayLayout(ptab_lane_layout(
                config.mbits), config.requant_lanes)),
            "r_addr": Out(ADDR_BITS), "r_data": In(data.ArrayLayout(signed(ELEM_BITS), V)),
            "w_addr": Out(ADDR_BITS), "w_data": Out(data.ArrayLayout(signed(ELEM_BITS), V)),
            "w_en": Out(V),
            "row": Out(1),              # a row (gemm: a tile row) was accepted (for counters)
        })

    def elaborate(self, platform):
        cfg = self._cfg
        V, R = cfg.cols, cfg.requant_lanes
        parts = V // R                  # requantiser passes per word
        log_v = V.bit_length() - 1
        m = Module()
        m.submodules.rq = rq = Requantizer(cfg, self.x_bits)

        # ---- jobs: the active one and one queued behind it -----------------------------------
        # A GEMM may start while the previous GEMM's last tiles still drain (the controller checks
        # ``free``); its fields wait in ``pending`` and become active after that GEMM's last row.
        rows_bits = DIM_BITS + log_v + 1
        job = data.StructLayout({
            "gemm": 1, "m": DIM_BITS, "n": DIM_BITS, "n_inner": DIM_BITS, "wide": 1,
            "residual": 1, "rm": signed(32), "re": 6, "o_base": ADDR_BITS,
            "o_stride": ADDR_BITS, "o_lane": range(V), "r_base": ADDR_BITS,
            "r_stride": ADDR_BITS, "p_index": ADDR_BITS,
            # rows (gemm: tile rows) per column block, blocks (rows: one), and whether each is 1
            "block_rows": rows_bits, "blocks": DIM_BITS, "row1": 1, "block1": 1, "live": 1})
        incoming = Signal(job)
        # the counts from the fields in two registered steps (the controller holds them from two
        # cycles before ``start``: CONSTANTS, LATCH), so the instruction decode is off the start
        # path
        blocks, n_inner = Signal(DIM_BITS), Signal(DIM_BITS)
        gemm, m_rows = Signal(), Signal(DIM_BITS)
        m.d.sync += [blocks.eq((self.n + V - 1) >> log_v), n_inner.eq(self.n_inner),
                     gemm.eq(self.gemm), m_rows.eq(self.m)]
        per_block = Mux(gemm, n_inner << log_v, m_rows)
        n_blocks = Mux(per_block == 0, 0, Mux(gemm, blocks, 1))
        counts = Signal.like(incoming)
        m.d.sync += [counts.block_rows.eq(per_block), counts.blocks.eq(n_blocks),
                     counts.row1.eq(per_block == 1), counts.block1.eq(n_blocks == 1),
                     counts.live.eq(n_blocks != 0)]
        counted = ("block_rows", "blocks", "row1", "block1", "live")
        m.d.comb += [getattr(incoming, f).eq(getattr(self, f)) for f, _ in job
                     if f not in counted]
        m.d.comb += [getattr(incoming, f).eq(getattr(counts, f)) for f in counted]
        act, pending, pending_valid = Signal(job), Signal(job), Signal()
        t, blk = Signal(DIM_BITS + 1), Signal(DIM_BITS)
        o_blk, r_blk = Signal(ADDR_BITS), Signal(ADDR_BITS)
        lanes_left = Signal(signed(DIM_BITS + 2))
        rows_left = Signal(rows_bits)               # rows still to come in this column block
        blocks_left = Signal(DIM_BITS)              # column blocks not finished (0: idle)
        block_row1 = Signal()                       # rows_left == 1, kept beside it
        block_only = Signal()                       # blocks_left == 1, kept beside it
        # blocks_left != 0, kept beside it: its zero test in front of the start / pending decision
        # → the job registers' enables was the 8x8 board build's longest path
        active = Signal()
        last_row = Signal()                         # the job's last row comes next

        def activate(j):
            return [act.eq(j), t.eq(0), blk.eq(0), o_blk.eq(j.o_base), r_blk.eq(j.r_base),
                    lanes_left.eq(j.n), rows_left.eq(j.block_rows), blocks_left.eq(j.blocks),
                    block_row1.eq(j.row1), block_only.eq(j.block1), active.eq(j.live),
                    last_row.eq(j.row1 & j.block1)]

        # ---- stage 0: accept a beat, read its parameters and residual -------------------------
        # (stage 1 holds a word for its V / R requantiser parts; the next is taken with the last)
        beat = self.i.payload
        s1_valid, s1_x = Signal(), Signal.like(beat.data)
        s1_addr, s1_n, s1_row_ok = Signal(ADDR_BITS), Signal(range(V + 1)), Signal()
        s1_job = Signal(job)                         # per-beat fields travel with the beat
        part = Signal(range(parts))                  # the word's part in the requantisers
        # ``part == parts - 1`` and ``i.ready`` are registers computed a cycle ahead: the part
        # counter's compare → ready → the sources' read enables, and → every per-beat update
        # below, were the 8x8 board build's longest paths
        part_last = Signal(name="part_last") if parts > 1 else C(1)
        ready = Signal(init=1, name="ready") if parts > 1 else C(1)
        take = self.i.valid & ready
        log_parts = parts.bit_length() - 1
        s1_entry = Signal(ADDR_BITS)                 # the held word's requantiser table entry
        # the table row the next cycle's part needs: the held word's next part, or the first
        # part of the word taken now
        hold = s1_valid & ~part_last                 # the held word has parts to go
        m.d.comb += [self.i.ready.eq(ready),
                     self.p_addr.eq(Mux(hold,
                                        (s1_entry << log_parts) | (part + 1),
                                        (act.p_index + blk) << log_parts)),
                     self.r_addr.eq(r_blk + t)]
        m.d.sync += s1_valid.eq(take | hold)
        if parts > 1:
            part_last_next = hold & (part == parts - 2)
            m.d.sync += [part.eq(Mux(hold, part + 1, 0)), part_last.eq(part_last_next),
                         ready.eq(~(take | hold) | part_last_next)]
        row_end = Mux(act.gemm, 1, beat.last)
        with m.If(take):
            m.d.sync += [s1_x.eq(beat.data), s1_addr.eq(o_blk + t), s1_row_ok.eq(t < act.m),
                         s1_entry.eq(act.p_index + blk),
                         s1_n.eq(Mux(act.gemm, Mux(lanes_left > V, V, lanes_left), beat.count)),
                         s1_job.eq(act)]
            with m.If(row_end):
                with m.If(block_row1):
                    m.d.sync += [rows_left.eq(act.block_rows), blocks_left.eq(blocks_left - 1),
                                 block_row1.eq(act.row1), block_only.eq(blocks_left == 2),
                                 active.eq(~block_only),
                                 last_row.eq(act.row1 & (blocks_left == 2))]
                with m.Else():
                    m.d.sync += [rows_left.eq(rows_left - 1), block_row1.eq(rows_left == 2),
                                 last_row.eq(block_only & (rows_left == 2))]
            with m.If(act.gemm):
                with m.If(t + 1 == (act.n_inner << log_v)):
                    m.d.sync += [t.eq(0), blk.eq(blk + 1), o_blk.eq(o_blk + act.o_stride),
                                 r_blk.eq(r_blk + act.r_stride), lanes_left.eq(lanes_left - V)]
                with m.Else():
                    m.d.sync += t.eq(t + 1)
            with m.Elif(beat.last):
                m.d.sync += [t.eq(t + 1), blk.eq(0), o_blk.eq(act.o_base),
                             r_blk.eq(act.r_base)]
            with m.Else():
                m.d.sync += [blk.eq(blk + 1), o_blk.eq(o_blk + act.o_stride),
                             r_blk.eq(r_blk + act.r_stride)]
        # job changes win over the per-beat updates above (they come later). ``start`` is taken
        # a cycle late, from a register (the controller's state decode → the job switch → the
        # job registers was the 8x8 board build's path asking for 70 MHz): the controller waits
        # on ``done`` two cycles after its start, and a job's first beat is further away still
        started = Signal(name="started")
        m.d.sync += started.eq(self.start)
        finishing = take & row_end & last_row
        with m.If(started):
            with m.If(active & ~finishing):
                m.d.sync += [pending.eq(incoming), pending_valid.eq(1)]
            with m.Else():
                m.d.sync += activate(incoming)
        with m.Elif(finishing & pending_valid):
            m.d.sync += activate(pending) + [pending_valid.eq(0)]
        m.d.comb += self.free.eq(~pending_valid)

        # ---- stage 1: requantiser input ------------------------------------------------------
        m.d.comb += [rq.i.valid.eq(s1_valid), rq.i.payload.wide.eq(s1_job.wide),
                     rq.i.payload.residual.eq(s1_job.residual), rq.i.payload.last.eq(0),
                     rq.o.ready.eq(1)]
        # the residual word is read for the word's first part; later parts use a copy kept from
        # then (the read address may move on to the next job meanwhile)
        r_kept = Signal.like(self.r_data)
        if parts > 1:
            with m.If(part == 0):
                m.d.sync += r_kept.eq(self.r_data)
        for lane in range(R):
            ln, prm = rq.i.payload.lane[lane], self.p_data[lane]
            m.d.comb += [ln.b.eq(prm.b), ln.m.eq(prm.m), ln.e.eq(prm.e), ln.c.eq(prm.c),
                         ln.rm.eq(s1_job.rm), ln.re.eq(s1_job.re)]
        with m.Switch(part):
            for k in range(parts):
                with m.Case(k):
                    res = self.r_data if k == 0 else r_kept
                    for lane in range(R):
                        ln, e = rq.i.payload.lane[lane], k * R + lane
                        m.d.comb += [ln.x.eq(s1_x[e]), ln.r.eq(res[e])]
        # the write position travels beside the requantiser (which never stalls)
        side = [(s1_valid, s1_addr, s1_n, s1_row_ok, s1_job.o_lane, part)]
        for k in range(rq.latency):
            prev = side[-1]
            regs = (Signal(name=f"side{k}_valid"), Signal(ADDR_BITS, name=f"side{k}_addr"),
                    Signal(range(V + 1), name=f"side{k}_n"), Signal(name=f"side{k}_ok"),
                    Signal(range(V), name=f"side{k}_lane"), Signal(range(parts),
                                                                   name=f"side{k}_part"))
            m.d.sync += [r.eq(p) for r, p in zip(regs, prev)]
            side.append(regs)
        w_valid, w_addr, w_n, w_ok, _, w_part = side[-1]

        # ---- the word's earlier parts wait for its last -----------------------------------------
        results = list(rq.o.payload.data)
        word = []
        for k in range(parts - 1):
            kept = [Signal(signed(len(r)), name=f"part{k}_{n}") for n, r in enumerate(results)]
            with m.If(w_part == k):
                m.d.sync += [s.eq(r) for s, r in zip(kept, results)]
            word += kept
        word += results

        # ---- write, lanes rotated up by o_lane, registered: the scratchpad's write port reaches
        # every block RAM of its replicas, so nothing else shares that cycle ----------------------
        # The rotation amount is copied per element a cycle ahead (equal to ``o_lane``): one
        # lane register through the rotation's index into every element's multiplexer was the
        # board build's path asking for 70 MHz (10.3 ns of routing after its first LUT)
        out = Array(word)
        w_whole = w_valid & (w_part == parts - 1)
        _, _, _, _, lane_before, _ = side[-2]
        lanes_at = replicas(m, lane_before, V, "w_lane")
        en = []
        for e, lane in enumerate(lanes_at):
            j = (e - lane)[:log_v] if log_v else 0
            m.d.sync += self.w_data[e].eq(out[j])
            en.append(w_whole & w_ok & (e >= lane) & (j < w_n))
        m.d.sync += [self.w_addr.eq(w_addr), self.w_en.eq(Cat(*en))]

        busy_pipe = Signal()
        m.d.comb += busy_pipe.eq(Cat(s[0] for s in side).any() | self.w_en.any())
        m.d.comb += self.done.eq(~active & ~pending_valid & ~busy_pipe)
        m.d.comb += self.row.eq(take & row_end)
        return m
