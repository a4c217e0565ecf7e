"""I-ViT ShiftGELU unit (``ivit`` mode): bit-exact with :func:`gen.intops.shift_gelu`.

The reference's GELU needs the row maximum ``c`` before any output, and one 31-bit division per
element::

    e1  = shift_exp(q - c, x0, n=23)          # per element
    e2  = shift_exp(-c, x0, n=23)             # per row (saturates at 2^40 for c < 0, as the golden)
    s   = min(e1 + e2, 2^31 - 1) ;  f = (2^31 - 1) // s
    y   = q * ((e1 * f) >> 24)                # |y| <= 2^(in_bits-1) * 127

A row is loaded into a slot of a ring of row buffers while its maximum is tracked, ``e2`` is
computed once, and the row is replayed (:mod:`hw.rowbuffer`; rows overlap, so the unit streams one
beat per cycle) through a stallable pipeline whose 31 restoring-division stages give one element
per lane per cycle (this per-element divider is the most expensive part of I-ViT in
hardware, which is why ``dyad`` mode replaces the whole unit with :class:`hw.gelu.GeluUnit`).
Valid for ``|x0| < 256`` (``1.702 * S > 1/256``), which :func:`gen.unit_params.shiftgelu` checks.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import RegisteredReadMemory
from .checks import check_row_unit, validating
from .divider import pipelined_quotient
from .dsp import LATENCY as PRODUCT_LATENCY
from .pipeline import (
    Pipeline,
    delay_line,
    replicas,
    split_latency,
    split_product,
    vector_layout,
)
from .rowbuffer import (
    RowLoader,
    RowReplay,
    describe,
    loaded_with_max,
    ring_slots,
    row_layout,
)
from .shiftexp import clamp_bounds, divide_steps, shift_exp, stages

__all__ = ["ShiftGelu", "params_layout", "N", "X0_LIMIT"]

N = 23
X0_LIMIT = 256          # |x0| bound that keeps y within in_bits + 8 bits
SUM_LIMIT = (1 << 31) - 1
E2_CAP = 1 << 40
EXP_STAGES = stages(N)
E2_STAGES = 13          # per-row shift_exp(-c): clamp 3, division 5, remainder 2, shift 3
SIG_BITS = 31           # e1 < |x0| * 2^23 < 2^31, and so are s and f
# per element: shift_exp, the sum and its clamp, 31 division steps, e1 * f, then q * sigma
LATENCY = EXP_STAGES + 2 + 31 + split_latency(SIG_BITS, SIG_BITS) + PRODUCT_LATENCY


def params_layout() -> data.StructLayout:
    return data.StructLayout({"x0": signed(10)})


class ShiftGelu(wiring.Component):
    """Members: ``i`` (signed ``in_bits`` elements, row framing), ``o`` (``in_bits + 8``-bit
    signed results, same framing), ``params`` (:func:`params_layout`), ``error`` (sticky: a row
    longer than ``max_row``)."""

    def __init__(self, *, lanes: int, in_bits: int = 8, max_row: int = 1024):
        with validating(self):
            check_row_unit(lanes=lanes, in_bits=in_bits, max_row=max_row, max_row_limit=4096)
        self.lanes, self.in_bits, self.max_row = lanes, in_bits, max_row
        self.depth = -(-max_row // lanes)
        self.out_bits = in_bits + 8
        self.slots = ring_slots(12, self.depth)     # the max fold, FIFO and e2 stage
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(self.out_bits, lanes))),
                          "params": In(params_layout()), "error": Out(1)})

    @staticmethod
    def _e2(m: Module, p: Pipeline, c, x0):
        """``shift_exp(-c)`` for either sign of ``-c``, saturating like the golden, one step per
        stage of ``p`` (:data:`E2_STAGES`; a new row every cycle)."""
        x = -c
        (lo, _, d), = clamp_bounds(m, x0, N, "e2_bound")
        xp = p.stage(x + (x >> 1) - (x >> 4), "e2_xp")
        xc = p.stage(Mux(xp < lo, lo, xp), "e2_xc")
        # xc <= 0: q = floor(-xc / d) <= n ;  xc > 0: q = -ceil(xc / d), saturated at -32
        neg = xc <= 0
        mag = Mux(neg, -xc, xc + d - 1)
        a, sat = p.stage(mag, "e2_a"), p.stage(~neg & (mag >= (d << 5)), "e2_sat")
        q, rem, (sat, neg, xc) = divide_steps(m, p.stage, a, d, 5, "e2",
                                              carry=(sat, p.stage(neg), p.stage(xc)))
        qd = p.stage(q * d, "e2_qd")                       # q <= 31, |x0| < 2^9
        rem, neg, xc, shift = p.stage(rem), p.stage(neg), p.stage(xc), p.stage(
            Mux(neg, N - q, N + q), "e2_shift")
        sat = p.stage(sat)
        r = p.stage(Mux(neg, -rem, xc - qd), "e2_r")       # in (x0, 0]
        big = p.stage(sat | (shift > 40), "e2_big")
        shift = p.stage(shift)
        base, big, shift = p.stage(r + (d << 1), "e2_base"), p.stage(big), p.stage(shift[:6])
        e = p.stage((base << shift) >> 1, "e2_e")
        return p.stage(Mux(p.stage(big) | (e > E2_CAP), E2_CAP, e)[:E2_CAP.bit_length()],
                       "e2")

    def elaborate(self, platform):
        m = Module()
        L, W, D, S = self.lanes, self.in_bits, self.depth, self.slots
        x0 = self.params.x0
        m.submodules.rowbuf = rowbuf = RegisteredReadMemory(L * W, S * D)
        row_w, row_r = rowbuf.write, rowbuf.read

        # ---- load: the row into its slot, its maximum c -----------------------------------------
        load = RowLoader(m, self.i, row_w, D, S, L, self.error)
        loaded = loaded_with_max(m, load, W, D, S, L)

        # ---- e2 = shift_exp(-c), once per row --------------------------------------------------
        ready = stream.Signature(row_layout(D, S, L, c=signed(W),
                                            e2=unsigned(E2_CAP.bit_length()))).create()
        pe = Pipeline(m, "e2", platform)
        e2 = self._e2(m, pe, loaded.payload.max, x0)
        row = pe.delay(loaded.payload, E2_STAGES, "row")
        m.d.comb += describe(pe.result(ready), row, c=row.max, e2=e2)
        pe.connect(loaded, ready, E2_STAGES)

        # ---- per-element datapath on the replayed rows ------------------------------------------
        replay = RowReplay(m, row_r, ready, L)
        m.d.comb += load.release.eq(replay.done)
        src = replay.o.payload
        p = Pipeline(m, "sgelu", platform)
        res = p.result(self.o)
        # values riding alongside the divider wait in LUT-RAM delay lines, not flip-flops
        # (carried through the 31 steps they were 20 000 of the unit's 69 000 FFs)
        flags_out = delay_line(m, Cat(src.count, src.last), LATENCY, "flags")
        m.d.comb += Cat(res.count, res.last).eq(flags_out)
        # the row's e2 in a copy per four lanes, beside each lane's e1
        e2s = replicas(m, delay_line(m, src.row.e2, EXP_STAGES - 1, "e2"), -(-L // 4), "e2")
        bounds = clamp_bounds(m, x0, N, "e1_bound", L)
        product_latency = split_latency(SIG_BITS, SIG_BITS)
        for n in range(L):
            q = src.data[n * W:(n + 1) * W].as_signed()
            e1 = shift_exp(m, p.stage, q - src.row.c, N, f"l{n}", bounds[n])
            total = p.stage(e1 + e2s[n // 4], f"total{n}")
            s = p.stage(Mux(total > SUM_LIMIT, SUM_LIMIT, total)[:31], f"s{n}")
            f = pipelined_quotient(p, SUM_LIMIT, s, SIG_BITS, name=f"div{n}")
            e1d = delay_line(m, e1[:SIG_BITS], 2 + SIG_BITS, f"e1d{n}")
            # e1 * f <= s * f < 2^31: sigma = (e1 * f) >> 24 <= 127
            sig = (split_product(p.product, p.stage, e1d, f, f"sig{n}") >> 24)[:8]
            qd = delay_line(m, q, EXP_STAGES + 2 + SIG_BITS + product_latency, f"qd{n}")
            y = p.product(qd, sig, f"y{n}")
            m.d.comb += res.data[n].eq(y[:self.out_bits])
        p.connect(replay.o, self.o, LATENCY, lead=RowReplay.LATENCY)
        return m
