"""Integer LayerNorm unit: bit-exact with :func:`gen.intops.layernorm_normalize`.

Per row of ``C`` elements (``C`` from the row framing, up to ``max_row``)::

    mean = round_half_even(sum(x) / C)      # one division, remainder-based rounding
    y    = x - mean ;  var = sum(y^2)
    std  = max(isqrt(var), 1)               # dyad: exact digit-by-digit root (hw.isqrt);
                                            # ivit: 10 Newton steps k = (k + var // k) >> 1 from 2^16
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

from .checks import validating
from .divider import SequentialDivider
from .isqrt import SequentialSqrt
from .pipeline import vector_layout

__all__ = ["LayerNorm", "OUT_BITS"]

OUT_BITS = 32
IVIT_NEWTON_STEPS = 10


class LayerNorm(wiring.Component):
    """Members: ``i`` (signed ``in_bits`` elements, row framing), ``o`` (32-bit normalised values,
    same framing), ``error`` (sticky: a row longer than ``max_row``; its excess was dropped)."""

    def __init__(self, *, mode: str, lanes: int, in_bits: int = 16, max_row: int = 1024):
        with validating(self):
            if mode not in ("ivit", "dyad"):
                raise ValueError(f"mode must be 'ivit' or 'dyad', not {mode!r}")
            if not isinstance(lanes, int) or lanes < 1:
                raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
            if in_bits not in (8, 16):
                raise ValueError(f"in_bits must be 8 or 16, not {in_bits!r}")
            if not isinstance(max_row, int) or not 1 <= max_row <= 1024:
                raise ValueError(f"max_row must be an integer in [1, 1024], not {max_row!r}")
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
        m.submodules.div = div = SequentialDivider(max(vb, 31), vb)   # 2^31 - 1 numerator
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
        var = Signal(vb)
        k = Signal(vb)
        steps = Signal(range(IVIT_NEWTON_STEPS + 1))
        f = Signal(31)
        ptr = Signal(range(self.depth + 2))
        m.d.comb += [row_r.addr.eq(ptr), row_r.en.eq(0)]     # read ports default to enabled

        def lanes_of(word):
            return [word[n * W:(n + 1) * W].as_signed() for n in range(L)]

        # ---- load: row buffer, running sum, element count ------------------------------------
        beat_sum = 0
        for n in range(L):
            beat_sum = beat_sum + Mux(n < self.i.payload.count, self.i.payload.data[n], 0)

        # ---- variance pipeline: read -> y^2 (registered) -> accumulate -------------------------
        rd_valid, rd_last = Signal(), Signal()
        sq_valid, sq_last = Signal(), Signal()
        sq = [Signal(2 * (W + 1), name=f"sq{n}") for n in range(L)]
        ys = [x - mean for x in lanes_of(row_r.data)]
        cnt_rd = Mux(rd_last, last_count, L)
        m.d.sync += [sq_valid.eq(rd_valid), sq_last.eq(rd_last)]
        m.d.sync += [sq[n].eq(Mux(n < cnt_rd, ys[n] * ys[n], 0)) for n in range(L)]
        sq_sum = 0
        for n in range(L):
            sq_sum = sq_sum + sq[n]

        # ---- output: held registered beat, read port enabled only when advancing ---------------
        out_valid, out_last = Signal(), Signal()
        out_count = Signal.like(self.o.payload.count)
        out_data = [Signal(signed(OUT_BITS), name=f"out{n}") for n in range(L)]
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.last.eq(out_last),
                     self.o.payload.count.eq(out_count)]
        m.d.comb += [self.o.payload.data[n].eq(out_data[n]) for n in range(L)]
        outs = [((y * f) >> 1)[:OUT_BITS] for y in ys]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.i.ready.eq(1), row_w.addr.eq(ptr),
                             row_w.data.eq(self.i.payload.data.as_value()),
                             row_w.en.eq(self.i.valid & (ptr < self.depth))]
                with m.If(self.i.valid):
                    m.d.sync += [total.eq(total + beat_sum),
                                 n_elems.eq(n_elems + self.i.payload.count)]
                    with m.If(ptr < self.depth):
                        m.d.sync += ptr.eq(ptr + 1)
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                    with m.If(self.i.payload.last):
                        m.d.sync += [beats.eq(Mux(ptr < self.depth, ptr + 1, ptr)),
                                     last_count.eq(self.i.payload.count)]
                        m.next = "MEAN"
            with m.State("MEAN"):
                mag = Mux(total < 0, -total, total)
                m.d.comb += [div.i.valid.eq(1), div.i.payload.num.eq(mag),
                             div.i.payload.den.eq(n_elems)]
                with m.If(div.i.ready):
                    m.next = "MEAN_Q"
            with m.State("MEAN_Q"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += q0.eq(div.o.payload)
                    m.next = "MEAN_ROUND"
            with m.State("MEAN_ROUND"):
                # round half to even from the remainder; the sign is applied to the magnitude
                mag = Mux(total < 0, -total, total)
                rem2 = (mag - q0 * n_elems) << 1
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
                with m.State("NEWTON"):
                    m.d.comb += [div.i.valid.eq(1), div.i.payload.num.eq(var),
                                 div.i.payload.den.eq(k)]
                    with m.If(div.i.ready):
                        m.next = "NEWTON_Q"
                with m.State("NEWTON_Q"):
                    m.d.comb += div.o.ready.eq(1)
                    with m.If(div.o.valid):
                        m.d.sync += [k.eq((k + div.o.payload) >> 1), steps.eq(steps + 1)]
                        m.next = "NEWTON_NEXT"
                with m.State("NEWTON_NEXT"):
                    m.next = "NEWTON"
                    with m.If(steps == IVIT_NEWTON_STEPS):
                        m.next = "RECIP"
            with m.State("RECIP"):
                m.d.comb += [div.i.valid.eq(1), div.i.payload.num.eq((1 << 31) - 1),
                             div.i.payload.den.eq(Mux(k == 0, 1, k))]
                with m.If(div.i.ready):
                    m.next = "RECIP_Q"
            with m.State("RECIP_Q"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += [f.eq(div.o.payload), ptr.eq(0)]
                    m.next = "PRIME"
            with m.State("PRIME"):
                m.d.comb += row_r.en.eq(1)                 # row beat 0 appears next cycle
                m.d.sync += ptr.eq(1)
                m.next = "OUT"
            with m.State("OUT"):
                with m.If(~out_valid | self.o.ready):
                    m.d.comb += row_r.en.eq(1)
                    with m.If(ptr <= beats):
                        is_last = ptr == beats
                        m.d.sync += [out_valid.eq(1), out_last.eq(is_last),
                                     out_count.eq(Mux(is_last, last_count, L)), ptr.eq(ptr + 1)]
                        m.d.sync += [out_data[n].eq(outs[n]) for n in range(L)]
                    with m.Else():
                        m.d.sync += [out_valid.eq(0), ptr.eq(0), total.eq(0), n_elems.eq(0)]
                        m.next = "LOAD"
        return m
