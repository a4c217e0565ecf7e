"""Output-stationary systolic MAC array.

Computes tiles ``C[R x C] = A[R x K] @ B[K x C]`` for any ``K`` from 1 to ``kmax``. Per cycle one
*beat* enters: column ``k`` of A (``rows`` activations, on stream ``a``, with ``last`` marking
``k = K - 1``) and row ``k`` of B (``cols`` weights, on stream ``b``). Results leave on ``o`` as
``rows`` beats of one accumulator row each (``last`` on the tile's final row).

Why output-stationary: each PE keeps its accumulator, so ``K`` is unbounded by the array, there is
no weight-preload phase, and a tile costs exactly ``K`` input cycles. Tiles stream back to back
(shadow registers hold the finished tile while the next one accumulates) whenever
``K >= max(rows, cols)``; the measured utilisation is in the README (``bench/array_util.py``).
Weight-stationary needs ``rows`` preload cycles per weight tile and a separate partial-sum
buffer for ``K > rows``, which costs more than it saves for our ``M ~ N ~ K`` GEMMs.

Timing (cycle ``T`` = the cycle a tile's last beat is accepted):

- row ``i`` of A is delayed ``i`` cycles, column ``j`` of B ``j`` cycles (the skew), so PE(i, j)
  sees beat ``k`` in its operand registers at ``k + i + j + 1``; the product is registered twice
  (:mod:`hw.multiplier`) and the accumulator/shadow register written at ``T + i + j + 4``;
- row ``i`` of the finished tile is read from the shadow registers at ``T + cols + 3 + i`` through
  a registered 4:1-per-level mux tree, and pushed into the output FIFO.

The input side enforces the two conditions that make this hazard-free, inserting bubbles only
when they fail: consecutive last beats are at least ``max(rows, cols)`` cycles apart (no shadow
register is overwritten before it is read, one read-out at a time), and a tile only starts when
the output FIFO has room for all its rows (the array never stalls, so no enable fans out to every
PE: back-pressure on ``o`` stops new tiles, never the pipeline).
"""
from __future__ import annotations

import math

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .config import AcceleratorConfig
from .multiplier import LATENCY, PipelinedMultiplier

__all__ = ["SystolicArray", "a_layout", "b_layout", "o_layout"]


def a_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.abits), cfg.rows), "last": 1})


def b_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.wbits), cfg.cols)


def o_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(cfg.acc_bits), cfg.cols),
                              "last": 1})


READ_LATENCY = LATENCY + 1      # operand register -> product (LATENCY) -> accumulator


class SystolicArray(wiring.Component):
    """Output-stationary ``rows x cols`` array of signed MACs (see the module docstring).

    Members
    -------
    a : In(stream.Signature(a_layout))   A columns; ``last`` ends a tile.
    b : In(stream.Signature(b_layout))   B rows; consumed together with ``a``.
    o : Out(stream.Signature(o_layout))  accumulator rows, ``rows`` per tile, ``last`` on the final.
    busy : Out(1)                        a tile is in flight (for performance counters).
    """

    def __init__(self, config: AcceleratorConfig):
        with validating(self):
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self._cfg = config
        super().__init__({
            "a": In(stream.Signature(a_layout(config))),
            "b": In(stream.Signature(b_layout(config))),
            "o": Out(stream.Signature(o_layout(config))),
            "busy": Out(1),
        })

    @property
    def config(self) -> AcceleratorConfig:
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        R, C = cfg.rows, cfg.cols
        m = Module()

        # ---- output FIFO and credits ---------------------------------------------------------
        width = o_layout(cfg).size
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=width,
                                                                 depth=cfg.out_fifo_rows)
        m.d.comb += [self.o.valid.eq(out_fifo.r_rdy), self.o.payload.eq(out_fifo.r_data),
                     out_fifo.r_en.eq(self.o.ready)]
        outstanding = Signal(range(cfg.out_fifo_rows + 1))      # rows promised to the FIFO
        in_tile = Signal()
        spacing = cfg.tile_spacing
        since_last = Signal(range(spacing + 1), init=spacing)

        start_ok = outstanding + R <= cfg.out_fifo_rows
        last_ok = since_last >= spacing - 1
        allow = (in_tile | start_ok) & (~self.a.payload.last | last_ok)
        fire = Signal()
        m.d.comb += [fire.eq(self.a.valid & self.b.valid & allow),
                     self.a.ready.eq(self.b.valid & allow),
                     self.b.ready.eq(self.a.valid & allow)]
        starting = fire & ~in_tile
        popped = self.o.valid & self.o.ready
        m.d.sync += outstanding.eq(outstanding + Mux(starting, R, 0) - popped)
        with m.If(fire):
            m.d.sync += in_tile.eq(~self.a.payload.last)
        with m.If(fire & self.a.payload.last):
            m.d.sync += since_last.eq(0)
        with m.Elif(since_last < spacing):
            m.d.sync += since_last.eq(since_last + 1)
        m.d.comb += self.busy.eq(in_tile | (outstanding != 0))

        # ---- skew: row i of A delayed i cycles, column j of B j cycles --------------------------
        # Beat flags are the same for every PE on an anti-diagonal (PE(i, j) sees beat k at
        # k + i + j + 1), so one shared delay line, tapped at i + j, replaces per-PE flag registers.
        flags = data.StructLayout({"valid": 1, "first": 1, "last": 1})
        beat = Signal(flags)
        m.d.comb += [beat.valid.eq(fire), beat.first.eq(starting),
                     beat.last.eq(fire & self.a.payload.last)]
        flag_taps = [beat]
        for n in range(R + C + LATENCY):
            tap = Signal(flags, name=f"flags_d{n}")
            m.d.sync += tap.eq(flag_taps[-1])
            flag_taps.append(tap)
        # operands are not zeroed on bubbles: accumulators ignore beats whose valid flag is low
        a_in = [_delay(m, self.a.payload.data[i], i, f"a_skew{i}") for i in range(R)]
        b_in = [_delay(m, self.b.payload[j], j, f"b_skew{j}") for j in range(C)]

        # ---- processing elements --------------------------------------------------------------
        shadow = [[None] * C for _ in range(R)]
        b_above = list(b_in)
        for i in range(R):
            a_left = a_in[i]
            for j in range(C):
                a_r = Signal(signed(cfg.abits), name=f"a_{i}_{j}")
                b_r = Signal(signed(cfg.wbits), name=f"b_{i}_{j}")
                m.d.sync += [a_r.eq(a_left), b_r.eq(b_above[j])]
                mul = PipelinedMultiplier(a_r, b_r, use_dsp=cfg.pe_uses_dsp(i, j))
                m.submodules[f"mul_{i}_{j}"] = mul
                f_p = flag_taps[i + j + 1 + LATENCY]        # flags of the beat whose product is p
                acc = Signal(signed(cfg.acc_bits), name=f"acc_{i}_{j}")
                sh = Signal(signed(cfg.acc_bits), name=f"shadow_{i}_{j}")
                total = Mux(f_p.first, 0, acc) + mul.p
                with m.If(f_p.valid):
                    m.d.sync += acc.eq(total)
                    with m.If(f_p.last):
                        m.d.sync += sh.eq(total)
                shadow[i][j] = sh
                a_left, b_above[j] = a_r, b_r

        # ---- read-out: row i at T + cols + READ_LATENCY + i ------------------------------------
        # The read schedule is registered: the row index that steers every column's mux comes
        # straight from a flip-flop (a combinational index was the 16x16 critical path).
        pre = flag_taps[C + READ_LATENCY - 1].last         # one cycle before row 0 is read
        reading = Signal()
        row_idx = Signal(range(max(R, 2)))
        with m.If(pre):
            m.d.sync += [reading.eq(1), row_idx.eq(0)]
        with m.Elif(reading):
            with m.If(row_idx == R - 1):
                m.d.sync += reading.eq(0)
            with m.Else():
                m.d.sync += row_idx.eq(row_idx + 1)

        rows_out, idx, valid = _mux_tree(m, shadow, row_idx, reading, cfg.acc_bits)
        is_last = Signal()
        m.d.comb += is_last.eq(idx == R - 1)
        row = Signal(o_layout(cfg))
        m.d.comb += [row.last.eq(is_last)] + [row.data[j].eq(rows_out[j]) for j in range(C)]
        m.d.comb += [out_fifo.w_data.eq(row.as_value()), out_fifo.w_en.eq(valid)]
        return m


def _delay(m: Module, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` registers (``cycles = 0`` returns it unchanged)."""
    for n in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{n}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _mux_tree(m: Module, rows, idx, valid, width):
    """Pipelined selection of ``rows[idx]`` (a list of per-column values), 4:1 per registered
    level. Returns the selected columns, the index and the valid bit, all aligned."""
    level = 0
    cands = rows
    while len(cands) > 1:
        lo_bit = 2 * level
        sel = idx[lo_bit:lo_bit + 2]
        nxt = []
        for g in range(math.ceil(len(cands) / 4)):
            group = cands[4 * g:4 * g + 4]
            regs = [Signal(signed(width), name=f"rd_l{level}_g{g}_c{j}")
                    for j in range(len(group[0]))]
            for j, reg in enumerate(regs):
                m.d.sync += reg.eq(Array(r[j] for r in group)[sel] if len(group) > 1
                                   else group[0][j])
            nxt.append(regs)
        idx_d = Signal.like(idx, name=f"rd_idx_l{level}")
        valid_d = Signal(name=f"rd_valid_l{level}")
        m.d.sync += [idx_d.eq(idx), valid_d.eq(valid)]
        cands, idx, valid = nxt, idx_d, valid_d
        level += 1
    if level == 0:          # a single row: register once for the same shape of timing
        regs = [Signal(signed(width), name=f"rd_c{j}") for j in range(len(cands[0]))]
        m.d.sync += [r.eq(v) for r, v in zip(regs, cands[0])]
        idx_d, valid_d = Signal.like(idx), Signal()
        m.d.sync += [idx_d.eq(idx), valid_d.eq(valid)]
        return regs, idx_d, valid_d
    return cands[0], idx, valid
