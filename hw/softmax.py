"""Shiftmax unit: integer softmax over rows, bit-exact with :func:`gen.intops.shiftmax`.

A row arrives as beats of ``lanes`` elements (``count`` valid lanes, ``last`` on its final beat),
up to ``max_row`` elements. The unit works on one row at a time, in four phases:

1. **load** — beats are written into a row buffer while the row maximum is tracked;
2. **exp** — the buffer is read back, ``x = q - max`` goes through the mode's exponential
   (``ivit``: the I-ViT shift exponential, n = 15; ``dyad``: :func:`gen.intops.exp2_poly`), the
   results are stored in an exponent buffer and summed;
3. **divide** — one reciprocal ``f = (2^M - 1) // sum`` on a :class:`~hw.divider.SequentialDivider`
   (``ivit``: ``M = 31`` and the sum clamped to ``2^31 - 1``);
4. **out** — ``p = (e * f) >> (M + 1 - out_bits)`` (``dyad``: rounded half up and clamped),
   streamed out with the row's framing.

Run-time parameters (``params``) are the compile-time constants of the layer: ``x0`` (``ivit``) or
the exponential's multiplier/shift/polynomial and ``M`` (``dyad``), and ``out_bits``.
Throughput: one row per ``3 * beats + M + pipeline`` cycles (the bench prints the measured rate).
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_row_unit, validating
from .divider import SequentialDivider
from .pipeline import masked_max, register, tree_sum, vector_layout
from .rowbuffer import RowEmitter, load_beats
from .shiftexp import STAGES as shift_exp_stages
from .shiftexp import shift_exp

__all__ = ["Shiftmax", "params_layout", "EXP_LATENCY", "DYAD_FRAC", "DYAD_GUARD"]

IVIT_N = 15
DYAD_FRAC = 12          # gen.intops.EXP2_FRAC_BITS
DYAD_GUARD = 16         # gen.intops.EXP2_GUARD
EXP_LATENCY = 7         # read -> exponential result, cycles


def params_layout(mode: str) -> data.StructLayout:
    if mode == "ivit":
        return data.StructLayout({"x0": signed(24), "out_bits": unsigned(5)})
    return data.StructLayout({"mul": unsigned(20), "mul_shift": unsigned(6), "c0": signed(24),
                              "c1": signed(24), "c2": signed(24), "recip_bits": unsigned(6),
                               "out_bits": unsigned(5)})


class Shiftmax(wiring.Component):
    """Members: ``i`` (signed ``in_bits`` scores), ``o`` (``out`` 16-bit probabilities, same row
    framing), ``params`` (:func:`params_layout`), ``error`` (sticky: a row exceeded ``max_row``;
    its excess beats were dropped).

    Parameters
    ----------
    mode : ``"ivit"`` or ``"dyad"``.
    lanes : elements per beat.
    in_bits : score width (8 or 16).
    max_row : longest row (elements).
    """

    def __init__(self, *, mode: str, lanes: int, in_bits: int = 8, max_row: int = 256):
        with validating(self):
            check_row_unit(mode=mode, lanes=lanes, in_bits=in_bits, max_row=max_row,
                           max_row_limit=4096)
        self.mode, self.lanes, self.in_bits, self.max_row = mode, lanes, in_bits, max_row
        self.depth = -(-max_row // lanes)
        x_bits = in_bits + 1
        if mode == "ivit":
            # e <= |x0| * 2^n with |x0| < 2^23; the sum is clamped to 2^31 - 1
            self.e_bits, self.sum_bits, self.num_bits = 23 + IVIT_N + 1, 40 + math.ceil(
                math.log2(max_row + 1)), 31
        else:
            self.e_bits = DYAD_GUARD + 1
            self.sum_bits = self.e_bits + math.ceil(math.log2(max_row + 1))
            self.num_bits = 62
        self.x_bits = x_bits
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(16, lanes))),
                          "params": In(params_layout(mode)),
                          "error": Out(1)})

    # ------------------------------------------------------------------------------------------
    def _exp(self, m: Module, x, n: int):
        """The mode's exponential of ``x <= 0`` as a ``EXP_LATENCY``-cycle pipeline (no stall:
        the exp phase never waits)."""
        prm = self.params

        def reg(v, name):
            return register(m, v, f"{name}_{n}")

        xr = reg(x, "xr")                             # the buffer read, registered
        if self.mode == "dyad":
            v = reg(reg(xr * prm.mul, "xm") >> prm.mul_shift, "v")
            octave = reg(-(v >> DYAD_FRAC), "oct")
            t = reg(v[:DYAD_FRAC], "t")
            u = reg((prm.c2 * t) >> DYAD_FRAC, "u")
            octave2, t2 = reg(octave, "oct2"), reg(t, "t2")
            w = reg(((prm.c1 + u)[:18].as_signed() * t2) >> DYAD_FRAC, "w")
            octave3 = reg(octave2, "oct3")
            P = prm.c0 + w
            return reg(Mux(octave3 > DYAD_GUARD, 0, P >> octave3[:5]), "e")
        # ivit: the four shift-exponential stages, then registers to match the dyad latency
        e = shift_exp(m, reg, xr, prm.x0, IVIT_N, f"sx{n}")
        for k in range(EXP_LATENCY - 1 - shift_exp_stages):
            e = reg(e, f"e_ivit{k}")
        return e

    def elaborate(self, platform):
        m = Module()
        L, prm = self.lanes, self.params
        m.submodules.div = div = SequentialDivider(self.num_bits, min(self.sum_bits, 64),
                                                   bits_per_cycle=2)     # radix 4
        m.submodules.rowbuf = rowbuf = memory.Memory(shape=unsigned(L * self.in_bits),
                                                     depth=self.depth, init=[])
        m.submodules.ebuf = ebuf = memory.Memory(shape=unsigned(L * self.e_bits),
                                                 depth=self.depth, init=[])
        row_w, row_r = rowbuf.write_port(), rowbuf.read_port()
        e_w, e_r = ebuf.write_port(), ebuf.read_port()

        beats = Signal(range(self.depth + 1))          # beats in the current row
        last_count = Signal.like(self.i.payload.count)
        rmax = Signal(signed(self.in_bits), init=-(1 << (self.in_bits - 1)))
        ptr = Signal(range(self.depth + 1))
        total = Signal(self.sum_bits)
        f = Signal(self.num_bits)

        # ---- phase 1: load --------------------------------------------------------------------
        # each beat's maximum is registered, then folded into the row's a cycle later (off the
        # accept path); the last beat's fold lands before the first exp read returns
        lowest = Const(-(1 << (self.in_bits - 1)), signed(self.in_bits))
        beat_max = Signal(signed(self.in_bits))
        beat_seen = Signal()
        m.d.sync += beat_seen.eq(0)
        with m.If(beat_seen & (beat_max > rmax)):
            m.d.sync += rmax.eq(beat_max)
        this_beat = masked_max(m, lowest, [self.i.payload.data[n] for n in range(L)],
                               self.i.payload.count, "beat_max")

        # ---- phase 2 pipeline: read -> exp -> accumulate/store -------------------------------
        rd_valid = Signal()                              # a read issued last cycle
        rd_addr = Signal.like(ptr)
        m.d.comb += [row_r.addr.eq(ptr), row_r.en.eq(1)]
        x = [Signal(signed(self.x_bits), name=f"x{n}") for n in range(L)]
        data_in = row_r.data
        for n in range(L):
            m.d.comb += x[n].eq(data_in[n * self.in_bits:(n + 1) * self.in_bits].as_signed()
                                - rmax)
        es = [self._exp(m, x[n], n) for n in range(L)]
        # valid / address / count flags ride along the exp pipeline
        tags = data.StructLayout({"valid": 1, "addr": unsigned(len(ptr)), "lastbeat": 1})
        tag = Signal(tags)
        m.d.comb += [tag.valid.eq(rd_valid), tag.addr.eq(rd_addr),
                     tag.lastbeat.eq(rd_addr == beats - 1)]
        for k in range(EXP_LATENCY):
            nxt = Signal(tags, name=f"tag{k}")
            m.d.sync += nxt.eq(tag)
            tag = nxt
        cnt_here = Mux(tag.lastbeat, last_count, L)
        esum = Signal(self.sum_bits)                     # the beat's sum, one cycle later
        m.d.sync += esum.eq(tree_sum([Mux(n < cnt_here, es[n], 0) for n in range(L)]))
        sum_tag = Signal(tags)
        m.d.sync += sum_tag.eq(tag)
        m.d.comb += [e_w.addr.eq(tag.addr), e_w.data.eq(Cat(*[e[:self.e_bits] for e in es])),
                     e_w.en.eq(tag.valid)]

        # ---- phase 4 datapath: e * f >> shift ---------------------------------------------------
        shift = Signal(7)
        if self.mode == "ivit":
            m.d.comb += shift.eq(32 - prm.out_bits)
        else:
            m.d.comb += shift.eq(prm.recip_bits + 1 - prm.out_bits)
        m.d.comb += [e_r.addr.eq(ptr), e_r.en.eq(0)]   # read ports default to enabled
        limit = Signal(16)
        m.d.comb += limit.eq((1 << (prm.out_bits - 1)[:5]) - 1)
        # f = (2^M - 1) // sum with sum >= e(x = 0) = c0 >= 2^(guard - 1): f < 2^(M - guard + 1)
        f_bits = self.num_bits if self.mode == "ivit" else self.num_bits - DYAD_GUARD + 1

        def products(word):
            return [word[n * self.e_bits:(n + 1) * self.e_bits] * f[:f_bits] for n in range(L)]

        if self.mode == "ivit":
            steps = [products, lambda ps: [(p >> shift)[:16] for p in ps]]
        else:
            steps = [products,
                     lambda ps: [p >> (shift - 1)[:7] for p in ps],
                     lambda hs: [(h + 1) >> 1 for h in hs],
                     lambda rs: [Mux(r > limit, limit, r)[:16] for r in rs]]
        out = RowEmitter(m, self.o, e_r, ptr, beats, last_count, L, steps)

        with m.FSM():
            with m.State("LOAD"):
                with m.If(load_beats(m, self.i, row_w, ptr, self.depth, self.error, beats,
                                     last_count, [beat_max.eq(this_beat),
                                                  beat_seen.eq(1)])):
                    m.d.sync += [ptr.eq(0), total.eq(0)]
                    m.next = "EXP"
            with m.State("EXP"):
                # issue reads for every beat, then let the exp pipeline drain
                with m.If(ptr < beats):
                    m.d.sync += [ptr.eq(ptr + 1), rd_valid.eq(1), rd_addr.eq(ptr)]
                with m.Else():
                    m.d.sync += rd_valid.eq(0)
                with m.If(sum_tag.valid):
                    m.d.sync += total.eq(total + esum)
                    with m.If(sum_tag.lastbeat):
                        m.next = "DIV"
            with m.State("DIV"):
                den = total
                if self.mode == "ivit":
                    den = Mux(total > (1 << 31) - 1, (1 << 31) - 1, total)
                num = ((1 << 31) - 1) if self.mode == "ivit" else (
                    (1 << prm.recip_bits) - 1)
                m.d.comb += [div.i.valid.eq(1), div.i.payload.num.eq(num),
                             div.i.payload.den.eq(den)]
                with m.If(div.i.ready):
                    m.d.sync += ptr.eq(0)
                    m.next = "WAIT"
            with m.State("WAIT"):
                m.d.comb += div.o.ready.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += [f.eq(div.o.payload), ptr.eq(0)]
                    m.next = "OUT"
            with m.State("OUT"):
                with m.If(out.run()):
                    m.d.sync += rmax.eq(-(1 << (self.in_bits - 1)))
                    m.next = "LOAD"
        return m
