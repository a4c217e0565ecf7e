"""Integer LayerNorm unit: bit-exact with :func:`gen.intops.layernorm_normalize`.

Per row of ``C`` elements (``C`` from the row framing, up to ``max_row``)::

    mean = round_half_even(sum(x) / C)      # one division, remainder-based rounding
    y    = x - mean ;  var = sum(y^2)
    std  = max(isqrt(var), 1)               # dyad: exact digit-by-digit root (hw.isqrt);
                                            # ivit: 10 Newton steps from 2^16,
                                            #       k = (k + var // k) >> 1
    f    = (2^31 - 1) // std                # one reciprocal per row
    out  = (y * f) >> 1                     # 32-bit signed, scale sqrt(C) / 2^30

gamma, beta (and I-ViT's ``bias_int``) are not applied here: they are the per-channel multiplier
and bias of the requantizer that follows (``gen.quantize`` folds them there). The phases run one
row at a time on one shared :class:`~hw.divider.SequentialDivider`; the bench prints the measured
throughput.
"""
from __future__ import annotations

import math

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_row_unit, validating
from .divider import SequentialDivider
from .isqrt import SequentialSqrt
from .pipeline import register, tree_sum, vector_layout
from .rowbuffer import RowEmitter, load_beats

__all__ = ["LayerNorm", "OUT_BITS"]

OUT_BITS = 32
IVIT_NEWTON_STEPS = 10


class LayerNorm(wiring.Component):
    """Members: ``i`` (signed ``in_bits`` elements, row framing), ``o`` (32-bit normalised values,
    same framing), ``error`` (sticky: a row longer than ``max_row``; its excess was dropped)."""

    def __init__(self, *, mode: str, lanes: int, in_bits: int = 16, max_row: int = 1024):
        with validating(self):
            check_row_unit(mode=mode, lanes=lanes, in_bits=in_bits, max_row=max_row,
                           max_row_limit=1024)
        self.mode, self.lanes, self.in_bits, self.max_row = mode, lanes, in_bits, max_row
        self.depth = -(-max_row // lanes)
        log_c = math.ceil(math.log2(max_row + 1))
        self.sum_bits = in_bits + log_c + 1
        self.var_bits = 2 * (in_bits + 1) + log_c
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(OUT_BITS, lanes))),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        L, W = self.lanes, self.in_bits
        vb = self.var_bits
        # 2^31 - 1 numerator; radix 4: the per-row mean, Newton and reciprocal divisions
        # dominate short rows
        m.submodules.div = div = SequentialDivider(max(vb, 31), vb, bits_per_cycle=2)
        m.submodules.sqrt = sqrt = SequentialSqrt(vb)
        m.submodules.rowbuf = rowbuf = memory.Memory(shape=unsigned(L * W), depth=self.depth,
                                                     init=[])
        row_w, row_r = rowbuf.write_port(), rowbuf.read_port()

        beats = Signal(range(self.depth + 1))
        last_count = Signal.like(self.i.payload.count)
        n_elems = Signal(range(self.max_row + L + 1))
        total = Signal(signed(self.sum_bits))
        mean = Signal(signed(W + 1))
        q0 = Signal(self.sum_bits)
        qn = Signal(self.sum_bits)                         # q0 * C
        rem2 = Signal(self.sum_bits + 1)                   # 2 * (|sum| - q0 * C)
        var = Signal(vb)
        k = Signal(vb)
        steps = Signal(range(IVIT_NEWTON_STEPS + 1))
        f = Signal(31)
        ptr = Signal(range(self.depth + 2))
        m.d.comb += [row_r.addr.eq(ptr), row_r.en.eq(0)]     # read ports default to enabled

        def lanes_of(word):
            return [word[n * W:(n + 1) * W].as_signed() for n in range(L)]

        # ---- load: row buffer, running sum, element count ------------------------------------
        beat_sum = tree_sum(Mux(n < self.i.payload.count, self.i.payload.data[n], 0)
                            for n in range(L))

        # ---- variance pipeline: read -> register -> y -> y^2 -> beat sum -> accumulate ---------
        rd_valid, rd_last = Signal(), Signal()
        flags = [(rd_valid, rd_last)]
        for stage in range(4):
            valid, last = flags[-1]
            flags.append((register(m, valid, f"var_valid{stage}"),
                          register(m, last, f"var_last{stage}")))

        def regs(values, name):
            return [register(m, v, f"{name}{n}") for n, v in enumerate(values)]

        xs = regs(lanes_of(row_r.data), "var_x")
        ys = regs([x - mean for x in xs], "var_y")
        cnt_y = Mux(flags[2][1], last_count, L)
        sq = regs([Mux(n < cnt_y, y * y, 0) for n, y in enumerate(ys)], "sq")
        sq_sum = Signal(self.var_bits, name="sq_sum")
        m.d.sync += sq_sum.eq(tree_sum(sq))
        sq_valid, sq_last = flags[4]

        # ---- output: the replayed row through (x - mean) * f >> 1 -----------------------------
        out = RowEmitter(m, self.o, row_r, ptr, beats, last_count, L, [
            lambda word: [x - mean for x in lanes_of(word)],
            lambda ys: [((y * f) >> 1)[:OUT_BITS] for y in ys]])

        def divide(state, num, den, on_result, then):
            """Two states: hand ``num // den`` to the shared divider, then take the result."""
            with m.State(state):
                m.d.comb += [div.i.valid.eq(1), div.i.payload.num.eq(num),
                             div.i.payload.den.eq(den)]
                with m.If(div.i.ready):
                    m.next = state + "_Q"
            with m.State(state + "_Q"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += on_result
                    m.next = then

        with m.FSM():
            with m.State("LOAD"):
                with m.If(load_beats(m, self.i, row_w, ptr, self.depth, self.error, beats,
                                     last_count, [total.eq(total + beat_sum),
                                                  n_elems.eq(n_elems + self.i.payload.count)])):
                    m.next = "MEAN"
            divide("MEAN", Mux(total < 0, -total, total), n_elems, [q0.eq(div.o.payload)],
                   "MEAN_ROUND")
            # round half to even from the remainder, one operation per state (once per row)
            mag = Mux(total < 0, -total, total)
            with m.State("MEAN_ROUND"):
                m.d.sync += qn.eq(q0 * n_elems)
                m.next = "MEAN_REM"
            with m.State("MEAN_REM"):
                m.d.sync += rem2.eq((mag - qn) << 1)
                m.next = "MEAN_SIGN"
            with m.State("MEAN_SIGN"):
                up = (rem2 > n_elems) | ((rem2 == n_elems) & q0[0])
                rounded = q0 + up
                m.d.sync += [mean.eq(Mux(total < 0, -rounded, rounded)), ptr.eq(0), var.eq(0)]
                m.next = "VAR"
            with m.State("VAR"):
                m.d.comb += row_r.en.eq(1)
                with m.If(ptr < beats):
                    m.d.sync += [ptr.eq(ptr + 1), rd_valid.eq(1), rd_last.eq(ptr == beats - 1)]
                with m.Else():
                    m.d.sync += [rd_valid.eq(0), rd_last.eq(0)]
                with m.If(sq_valid):
                    m.d.sync += var.eq(var + sq_sum)
                    with m.If(sq_last):
                        m.d.sync += [k.eq(1 << 16), steps.eq(0)]
                        m.next = "ROOT" if self.mode == "dyad" else "NEWTON"
            if self.mode == "dyad":
                with m.State("ROOT"):
                    m.d.comb += [sqrt.i.valid.eq(1), sqrt.i.payload.eq(var)]
                    with m.If(sqrt.i.ready):
                        m.next = "ROOT_WAIT"
                with m.State("ROOT_WAIT"):
                    m.d.comb += sqrt.o.ready.eq(1)
                    with m.If(sqrt.o.valid):
                        m.d.sync += k.eq(Mux(sqrt.o.payload == 0, 1, sqrt.o.payload))
                        m.next = "RECIP"
            else:
                divide("NEWTON", var, k, [k.eq((k + div.o.payload) >> 1), steps.eq(steps + 1)],
                       "NEWTON_NEXT")
                with m.State("NEWTON_NEXT"):
                    m.next = "NEWTON"
                    with m.If(steps == IVIT_NEWTON_STEPS):
                        m.next = "RECIP"
            divide("RECIP", (1 << 31) - 1, Mux(k == 0, 1, k), [f.eq(div.o.payload), ptr.eq(0)],
                   "OUT")
            with m.State("OUT"):
                with m.If(out.run()):
                    m.d.sync += [total.eq(0), n_elems.eq(0)]
                    m.next = "LOAD"
        return m
