"""I-ViT ShiftGELU unit (``ivit`` mode): bit-exact with :func:`gen.intops.shift_gelu`.

The reference's GELU needs the row maximum ``c`` before any output, and one 31-bit division per
element::

    e1  = shift_exp(q - c, x0, n=23)          # per element
    e2  = shift_exp(-c, x0, n=23)             # per row (saturates at 2^40 for c < 0, as the golden)
    s   = min(e1 + e2, 2^31 - 1) ;  f = (2^31 - 1) // s
    y   = q * ((e1 * f) >> 24)                # |y| <= 2^(in_bits-1) * 127

A row is loaded into a buffer while its maximum is tracked; ``e2`` is computed once; the row is then
replayed through a stallable pipeline whose 31 restoring-division stages give one element per lane
per cycle during the replay (this per-element divider is the most expensive part of I-ViT in
hardware, which is why ``dyad`` mode replaces the whole unit with :class:`hw.gelu.GeluUnit`).
Valid for ``|x0| < 256`` (``1.702 * S > 1/256``), which :func:`gen.unit_params.shiftgelu` checks.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import check_row_unit, validating
from .divider import pipelined_quotient
from .pipeline import Pipeline, masked_max, vector_layout, wire
from .rowbuffer import load_beats
from .shiftexp import STAGES as EXP_STAGES
from .shiftexp import shift_exp

__all__ = ["ShiftGelu", "params_layout", "N", "X0_LIMIT"]

N = 23
X0_LIMIT = 256          # |x0| bound that keeps y within in_bits + 8 bits
SUM_LIMIT = (1 << 31) - 1
E2_CAP = 1 << 40
LATENCY = EXP_STAGES + 1 + 31 + 2


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
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(self.out_bits, lanes))),
                          "params": In(params_layout()), "error": Out(1)})

    def _e2(self, m: Module, c, x0):
        """``shift_exp(-c)`` for either sign of ``-c``, saturating like the golden (combinational;
        used once per row)."""
        x = -c
        xp = x + (x >> 1) - (x >> 4)
        xc = Mux(xp < N * x0, N * x0, xp)
        d = -x0
        # xc <= 0: q = floor(-xc / d) <= n ;  xc > 0: q = -ceil(xc / d), saturated at -32
        neg = xc <= 0
        a = Mux(neg, -xc, xc + d - 1)
        rem, bits = a, []
        for k in reversed(range(5)):
            take = wire(m, rem >= (d << k), f"e2_take{k}")
            rem = wire(m, Mux(take, rem - (d << k), rem), f"e2_rem{k}")
            bits.append(take)
        qq = Cat(*reversed(bits))
        sat = ~neg & (a >= (d << 5))
        r = Mux(neg, -rem, xc - qq * d)                     # in (x0, 0]
        shift = Mux(neg, N - qq, N + qq)
        big = sat | (shift > 40)
        e = ((r - 2 * x0) << shift[:6]) >> 1
        return Mux(big | (e > E2_CAP), E2_CAP, e)

    def elaborate(self, platform):
        m = Module()
        L, W = self.lanes, self.in_bits
        x0 = self.params.x0
        m.submodules.rowbuf = rowbuf = memory.Memory(shape=unsigned(L * W), depth=self.depth,
                                                     init=[])
        row_w, row_r = rowbuf.write_port(), rowbuf.read_port()
        beats = Signal(range(self.depth + 1))
        last_count = Signal.like(self.i.payload.count)
        cmax = Signal(signed(W), init=-(1 << (W - 1)))
        e2 = Signal(range(E2_CAP + 1))
        ptr = Signal(range(self.depth + 1))

        # replayed row as an internal stream feeding the stallable datapath
        src = stream.Signature(vector_layout(W, L)).create()
        p = Pipeline(m, "sgelu")
        rd_v, rd_last = Signal(), Signal()
        m.d.comb += [row_r.addr.eq(ptr), row_r.en.eq(0), src.valid.eq(rd_v),
                     src.payload.last.eq(rd_last),
                     src.payload.count.eq(Mux(rd_last, last_count, L)),
                     src.payload.data.eq(row_r.data)]

        beat_max = masked_max(m, cmax, [self.i.payload.data[n] for n in range(L)],
                              self.i.payload.count, "beat_max")

        with m.FSM():
            with m.State("LOAD"):
                with m.If(load_beats(m, self.i, row_w, ptr, self.depth, self.error, beats,
                                     last_count, [cmax.eq(beat_max)])):
                    m.next = "E2"
            with m.State("E2"):
                m.d.sync += [e2.eq(self._e2(m, cmax, x0)), ptr.eq(0), rd_v.eq(0)]
                m.next = "REPLAY"
            with m.State("REPLAY"):
                with m.If(p.en):
                    m.d.comb += row_r.en.eq(1)
                    with m.If(ptr < beats):
                        m.d.sync += [ptr.eq(ptr + 1), rd_v.eq(1), rd_last.eq(ptr == beats - 1)]
                    with m.Else():
                        m.d.sync += rd_v.eq(0)
                with m.If(self.o.valid & self.o.ready & self.o.payload.last):
                    m.d.sync += [ptr.eq(0), rd_v.eq(0),
                                 cmax.eq(-(1 << (W - 1)))]
                    m.next = "LOAD"

        # ---- per-element datapath ----------------------------------------------------------------
        flags = Cat(src.payload.count, src.payload.last)
        flags_out = p.delay(flags, LATENCY, "flags")
        m.d.comb += Cat(self.o.payload.count, self.o.payload.last).eq(flags_out)
        for n in range(L):
            q = src.payload.data[n]
            e1 = shift_exp(m, p.stage, q - cmax, x0, N, f"l{n}")
            q4 = p.delay(q, EXP_STAGES, f"q{n}")
            s = p.stage(Mux(e1 + e2 > SUM_LIMIT, SUM_LIMIT, e1 + e2)[:31], f"s{n}")
            e1s, q5 = p.stage(e1, f"e1s{n}"), p.stage(q4, f"q5_{n}")
            f, (e1d, qd) = pipelined_quotient(p, SUM_LIMIT, s, 31, carry=(e1s, q5),
                                              name=f"div{n}")
            sig = p.stage((e1d * f) >> 24, f"sig{n}")
            qdd = p.stage(qd, f"qdd{n}")
            y = p.stage(qdd * sig, f"y{n}")
            m.d.comb += self.o.payload.data[n].eq(y[:self.out_bits])
        p.connect(src, self.o, LATENCY)
        return m
