"""The output path of every instruction: requantise a stream of ``V``-lane results and write them
into the scratchpad at their tensor positions (see :mod:`hw.isa` for the layout).

Beats arrive in one of two orders:

- ``gemm``: accumulator rows of the array, tile by tile — ``for block: for row tile: V rows`` —
  so row ``t`` runs over ``n_inner * V`` rows before the column block ``blk`` advances;
- rows: ``M`` rows of ``ceil(N / V)`` beats each (``last`` on a row's final beat).

Per beat the drain reads the requantiser entry ``p_index + blk`` (per-lane ``m, e, b, c``) and, with
``residual``, the residual word at ``r_base + blk * r_stride + t``; the requantiser's result goes
to ``o_base + blk * o_stride + t`` with lanes rotated up by ``o_lane``, writing only lanes below
``N`` (``count`` on row beats) and rows below ``M``. The requantiser never stalls (the write port
is always free), so the write address simply travels beside it.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AcceleratorConfig
from .isa import ADDR_BITS, DIM_BITS, ELEM_BITS, ptab_lane_layout
from .requant import LATENCY, Requantizer

__all__ = ["Drain", "drain_layout"]


def drain_layout(lanes: int, x_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(x_bits), lanes),
                              "count": range(lanes + 1), "last": 1})


class Drain(wiring.Component):
    def __init__(self, config: AcceleratorConfig, x_bits: int):
        self._cfg, self.x_bits = config, x_bits
        V = config.lanes
        super().__init__({
            "i": In(stream.Signature(drain_layout(V, x_bits))),
            "start": In(1), "done": Out(1),
            "gemm": In(1), "m": In(DIM_BITS), "n": In(DIM_BITS), "n_inner": In(DIM_BITS),
            "wide": In(1), "residual": In(1), "rm": In(signed(32)), "re": In(6),
            "o_base": In(ADDR_BITS), "o_stride": In(ADDR_BITS), "o_lane": In(8),
            "r_base": In(ADDR_BITS), "r_stride": In(ADDR_BITS), "p_index": In(ADDR_BITS),
            "p_addr": Out(ADDR_BITS), "p_data": In(data.ArrayLayout(ptab_lane_layout(
                config.mbits), V)),
            "r_addr": Out(ADDR_BITS), "r_data": In(data.ArrayLayout(signed(ELEM_BITS), V)),
            "w_addr": Out(ADDR_BITS), "w_data": Out(data.ArrayLayout(signed(ELEM_BITS), V)),
            "w_en": Out(V),
            "row": Out(1),              # a row (gemm: a tile row) was accepted (for counters)
        })

    def elaborate(self, platform):
        cfg = self._cfg
        V = cfg.lanes
        log_v = V.bit_length() - 1
        m = Module()
        m.submodules.rq = rq = Requantizer(cfg, self.x_bits)

        # ---- latched instruction fields -----------------------------------------------------
        gemm, rows_m, n, n_inner = Signal(), Signal(DIM_BITS), Signal(DIM_BITS), Signal(DIM_BITS)
        wide, residual, rm, re = Signal(), Signal(), Signal(signed(32)), Signal(6)
        o_base, o_stride, o_lane = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(range(V))
        r_base, r_stride, p_index = Signal(ADDR_BITS), Signal(ADDR_BITS), Signal(ADDR_BITS)
        t, blk = Signal(DIM_BITS + 1), Signal(DIM_BITS)
        o_blk, r_blk = Signal(ADDR_BITS), Signal(ADDR_BITS)
        lanes_left = Signal(signed(DIM_BITS + 2))
        remaining = Signal(DIM_BITS * 2 + 1)        # rows (gemm: tile rows) still to come
        with m.If(self.start):
            m.d.sync += [gemm.eq(self.gemm), rows_m.eq(self.m), n.eq(self.n),
                         n_inner.eq(self.n_inner), wide.eq(self.wide),
                         residual.eq(self.residual), rm.eq(self.rm), re.eq(self.re),
                         o_base.eq(self.o_base), o_stride.eq(self.o_stride),
                         o_lane.eq(self.o_lane), r_base.eq(self.r_base),
                         r_stride.eq(self.r_stride), p_index.eq(self.p_index),
                         t.eq(0), blk.eq(0), o_blk.eq(self.o_base), r_blk.eq(self.r_base),
                         lanes_left.eq(self.n),
                         remaining.eq(Mux(self.gemm,
                                          (self.n_inner * ((self.n + V - 1) >> log_v)) << log_v,
                                          self.m))]

        # ---- stage 0: accept a beat, read its parameters and residual -------------------------
        beat = self.i.payload
        take = self.i.valid            # always ready
        m.d.comb += [self.i.ready.eq(1), self.p_addr.eq(p_index + blk),
                     self.r_addr.eq(r_blk + t)]
        s1_valid, s1_x = Signal(), Signal.like(beat.data)
        s1_addr, s1_n, s1_row_ok = Signal(ADDR_BITS), Signal(range(V + 1)), Signal()
        m.d.sync += s1_valid.eq(take)
        row_end = Mux(gemm, 1, beat.last)
        with m.If(take):
            m.d.sync += [s1_x.eq(beat.data), s1_addr.eq(o_blk + t), s1_row_ok.eq(t < rows_m),
                         s1_n.eq(Mux(gemm, Mux(lanes_left > V, V, lanes_left), beat.count))]
            with m.If(row_end):
                m.d.sync += remaining.eq(remaining - 1)
            with m.If(gemm):
                with m.If(t + 1 == (n_inner << log_v)):
                    m.d.sync += [t.eq(0), blk.eq(blk + 1), o_blk.eq(o_blk + o_stride),
                                 r_blk.eq(r_blk + r_stride), lanes_left.eq(lanes_left - V)]
                with m.Else():
                    m.d.sync += t.eq(t + 1)
            with m.Elif(beat.last):
                m.d.sync += [t.eq(t + 1), blk.eq(0), o_blk.eq(o_base), r_blk.eq(r_base)]
            with m.Else():
                m.d.sync += [blk.eq(blk + 1), o_blk.eq(o_blk + o_stride),
                             r_blk.eq(r_blk + r_stride)]

        # ---- stage 1: requantiser input ------------------------------------------------------
        m.d.comb += [rq.i.valid.eq(s1_valid), rq.i.payload.wide.eq(wide),
                     rq.i.payload.residual.eq(residual), rq.i.payload.last.eq(0),
                     rq.o.ready.eq(1)]
        for lane in range(V):
            ln, prm = rq.i.payload.lane[lane], self.p_data[lane]
            m.d.comb += [ln.x.eq(s1_x[lane]), ln.b.eq(prm.b), ln.m.eq(prm.m), ln.e.eq(prm.e),
                         ln.c.eq(prm.c), ln.r.eq(self.r_data[lane]), ln.rm.eq(rm),
                         ln.re.eq(re)]
        # the write position travels beside the requantiser (which never stalls)
        side = [(s1_valid, s1_addr, s1_n, s1_row_ok)]
        for k in range(LATENCY):
            prev = side[-1]
            regs = (Signal(name=f"side{k}_valid"), Signal(ADDR_BITS, name=f"side{k}_addr"),
                    Signal(range(V + 1), name=f"side{k}_n"), Signal(name=f"side{k}_ok"))
            m.d.sync += [r.eq(p) for r, p in zip(regs, prev)]
            side.append(regs)
        w_valid, w_addr, w_n, w_ok = side[-1]

        # ---- write, lanes rotated up by o_lane ----------------------------------------------
        out = Array(rq.o.payload.data)
        en = []
        for e in range(V):
            j = (e - o_lane)[:log_v] if log_v else 0
            m.d.comb += self.w_data[e].eq(out[j])
            en.append(w_valid & w_ok & (e >= o_lane) & (j < w_n))
        m.d.comb += [self.w_addr.eq(w_addr), self.w_en.eq(Cat(*en))]

        busy_pipe = Signal()
        m.d.comb += busy_pipe.eq(Cat(s[0] for s in side).any())
        m.d.comb += self.done.eq((remaining == 0) & ~busy_pipe)
        m.d.comb += self.row.eq(take & row_end)
        return m
