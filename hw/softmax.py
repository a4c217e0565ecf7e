"""Shiftmax unit: integer softmax over rows, bit-exact with :func:`gen.intops.shiftmax`.

A row arrives as beats of ``lanes`` elements (``count`` valid lanes, ``last`` on its final beat),
up to ``max_row`` elements. Each row goes through four phases, and the phases work on different
rows at once (:mod:`hw.rowbuffer`: a ring of row buffers, row descriptors between the phases):

1. **load** — beats are written into the row's slot while the row maximum is tracked;
2. **exp** — the slot is read back, ``x = q - max`` goes through the mode's exponential
   (``ivit``: the I-ViT shift exponential, n = 15; ``dyad``: :func:`gen.intops.exp2_poly`), the
   results are stored in the slot of an exponent ring and summed; rows follow back to back;
3. **divide** — one reciprocal ``f = (2^M - 1) // sum`` on a :class:`~hw.divider.SequentialDivider`
   (``ivit``: ``M = 31`` and the sum clamped to ``2^31 - 1``);
4. **out** — ``p = (e * f) >> (M + 1 - out_bits)`` (``dyad``: rounded half up and clamped),
   streamed out with the row's framing.

Run-time parameters (``params``) are the compile-time constants of the layer: ``x0`` (``ivit``) or
the exponential's multiplier/shift/polynomial and ``M`` (``dyad``), and ``out_bits``.
Throughput: one beat per cycle for rows of ``max_row`` elements — the reciprocal takes
``recip_cycles`` cycles per row, and ``recip_copies = ceil(recip_cycles / beats)`` copies of it take
rows in turn so that it hides behind the longest row; shorter rows go at one row per
``recip_cycles / recip_copies`` cycles. The bench prints the measured rate.
"""
from __future__ import annotations

import math

from amaranth.hdl import C, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import RegisteredReadMemory
from .checks import check_row_unit, validating
from .divider import SequentialDivider
from .dsp import product
from .pipeline import (
    Pipeline,
    delay,
    lane_mask,
    register,
    replica,
    replicas,
    split_latency,
    split_product,
    tree_levels,
    tree_sum,
    vector_layout,
)
from .rowbuffer import (
    RowLoader,
    RowReplay,
    call,
    describe,
    finished_rows,
    loaded_with_max,
    ring_slots,
    row_layout,
    row_stage,
    stage_copies,
)
from .shiftexp import clamp_bounds, shift_exp, stages

__all__ = ["Shiftmax", "params_layout", "EXP_LATENCY", "DYAD_FRAC", "DYAD_GUARD"]

IVIT_N = 15
DYAD_FRAC = 12          # gen.intops.EXP2_FRAC_BITS
DYAD_GUARD = 16         # gen.intops.EXP2_GUARD
# one quotient bit per cycle: two chained compare-subtract steps on ~47 bits (radix 4) were the
# unit's longest path (11.7 ns); the reciprocal's copies make up for the doubled latency
RECIP_BITS_PER_CYCLE = 1
LANES_PER_F = 4         # lanes sharing one copy of the row's reciprocal
# x * mul and t * c2: an operand of up to 18 bits times a 20 / 24-bit parameter (two pieces)
EXP_PRODUCT = split_latency(18, 24)
# read -> exponential result, cycles: x - max, x * mul, v, t * c2, (c1 + u) * t, c0 + w, shift
EXP_LATENCY = 1 + EXP_PRODUCT + 1 + EXP_PRODUCT + 2 + 1 + 2


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
        # f = (2^M - 1) // sum with sum >= e(x = 0) = c0 >= 2^(guard - 1): f < 2^(M - guard + 1)
        self.f_bits = self.num_bits if mode == "ivit" else self.num_bits - DYAD_GUARD + 1
        # per-row cycles between a row loaded and replayed: the exp pass over its beats, the
        # exponential pipeline, the reciprocal, and the stage and FIFO handshakes
        self.recip_cycles = SequentialDivider.cycles(self.f_bits, RECIP_BITS_PER_CYCLE) + 4
        self.recip_copies = -(-self.recip_cycles // self.depth)
        self.slots = ring_slots(self.depth + EXP_LATENCY + self.recip_cycles + 12, self.depth)
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(16, lanes))),
                          "params": In(params_layout(mode)),
                          "error": Out(1)})

    # ------------------------------------------------------------------------------------------
    def _exp(self, m: Module, platform, x, n: int, bound=None):
        """The mode's exponential of ``x <= 0`` as a ``EXP_LATENCY``-cycle pipeline (no stall:
        the exp phase never waits); ``bound``: the lane's :func:`~hw.shiftexp.clamp_bounds`
        (``ivit``)."""
        def reg(v, name):
            return register(m, v, f"{name}_{n}")

        if self.mode == "dyad":
            # the exponential's constants copied per lane (a layer's constants, stable long
            # before a row's first exponential): the shared parameter → c1 + u → a lane's
            # multiplier input was the 16-lane unit's path, 11.6 ns of routing
            fields = ("mul", "mul_shift", "c0", "c1", "c2")
            layout = data.StructLayout({f: params_layout("dyad")[f].shape for f in fields})
            prm = data.View(layout, replica(m, Cat(*(self.params[f] for f in fields)),
                                            f"exp_params{n}"))
            # the wide products' operands go into the multipliers' input registers, their partial
            # products are summed a cycle later
            def multiply(a, b, name):
                return product(m, platform, a, b, f"{name}_{n}")

            xr = reg(x, "xr")                         # x - max registered
            v = reg(split_product(multiply, reg, xr, prm.mul, "xm") >> prm.mul_shift, "v")
            octave = reg(-(v >> DYAD_FRAC), "oct")              # >= 0: x <= 0
            t = reg(v[:DYAD_FRAC], "t")
            u = split_product(multiply, reg, v[:DYAD_FRAC], prm.c2, "c2t") >> DYAD_FRAC
            # e = 0 beyond the guard bits: that compare on the octave's full width (a chain of
            # six LUTs) in the cycle before the shift was the 16-lane unit's path, so it is
            # made in the cycle after the octave, and only the octave's 5 low bits (all the
            # shift needs when it is not beyond) travel on
            beyond = reg(octave > DYAD_GUARD, "beyond")
            # octave and t (a cycle after v) wait for u (EXP_PRODUCT after v)
            octave2 = delay(m, octave[:5], EXP_PRODUCT - 1, f"oct_d{n}_")
            t2 = delay(m, t, EXP_PRODUCT - 1, f"t_d{n}_")
            # c1 + u and t into the last product's input registers; its output register is w
            w = multiply((prm.c1 + u)[:18].as_signed(), t2, "c1ut") >> DYAD_FRAC
            octave3 = reg(reg(octave2, "oct3"), "oct4")
            # c0 + w, then >> octave in two steps (whole nibbles, then the rest): the shift by
            # a 5-bit amount in one cycle after the sum was the unit's longest path
            P, octave4 = reg(prm.c0 + w, "P"), reg(octave3, "oct5")
            coarse = reg(P >> Cat(Const(0, 2), octave4[2:5]), "coarse")
            zero = delay(m, beyond, EXP_PRODUCT + 2, f"zero_d{n}_")
            fine = reg(octave4[:2], "fine")
            return reg(Mux(zero, 0, coarse >> fine), "e")
        # ivit: the shift-exponential stages, then registers to match the dyad latency
        e = shift_exp(m, reg, reg(x, "xr"), IVIT_N, f"sx{n}", bound)
        return delay(m, e, EXP_LATENCY - 1 - stages(IVIT_N), f"e_ivit{n}_")

    def elaborate(self, platform):
        m = Module()
        L, prm, D, S = self.lanes, self.params, self.depth, self.slots
        m.submodules.xbuf = xbuf = RegisteredReadMemory(L * self.in_bits, S * D)
        m.submodules.ebuf = ebuf = RegisteredReadMemory(L * self.e_bits, S * D)
        x_w, x_r = xbuf.write, xbuf.read
        e_w, e_r = ebuf.write, ebuf.read

        # ---- load: the row into its slot, its maximum -----------------------------------------
        load = RowLoader(m, self.i, x_w, D, S, L, self.error)
        loaded = loaded_with_max(m, load, self.in_bits, D, S, L)

        # ---- exp pass: each row read back (never stalls), e = exp(x - max) stored in the
        # e-buffer at the same address, summed ---------------------------------------------------
        xs = RowReplay(m, x_r, loaded, L, "xs")
        m.d.comb += xs.o.ready.eq(1)
        xw = xs.o.payload
        bounds = (clamp_bounds(m, self.params.x0, IVIT_N, "sx_bound", L) if self.mode == "ivit"
                  else [None] * L)
        es = [self._exp(m, platform, xw.data[n * self.in_bits:(n + 1) * self.in_bits].as_signed()
                        - xw.row.max, n, bounds[n]) for n in range(L)]
        tags = data.StructLayout({"valid": 1, "first": 1, "last": 1, "count": xw.count.shape(),
                                  "live": L,
                                  "addr": xw.row.base.shape(), "row": loaded.payload.shape()})
        etag = Signal(tags)
        m.d.comb += [etag.valid.eq(xs.o.valid), etag.first.eq(xw.index == 0),
                     etag.last.eq(xw.last), etag.count.eq(xw.count),
                     etag.live.eq(lane_mask(xw.count, L)),
                     etag.addr.eq(xw.row.base + xw.index), etag.row.eq(xw.row)]
        etag = delay(m, etag, EXP_LATENCY, "etag")
        m.d.comb += [e_w.addr.eq(etag.addr), e_w.en.eq(etag.valid),
                     e_w.data.eq(Cat(*[e[:self.e_bits] for e in es]))]
        # the beat's sum: an adder tree registered at every level
        esum = tree_sum([register(m, Mux(etag.live[n], es[n], 0), f"e_live{n}")
                         for n in range(L)], stage=lambda v, name: register(m, v, name))
        stag = delay(m, etag, tree_levels(L) + 1, "sum_tag")
        total = Signal(self.sum_bits)
        row_total = Mux(stag.first, 0, total) + esum
        with m.If(stag.valid):
            m.d.sync += total.eq(row_total)
        summed = finished_rows(m, row_layout(D, S, L, total=unsigned(self.sum_bits)), S, stag,
                               "summed", total=total)

        # ---- one reciprocal per row (in copies that take rows in turn when it outlasts a row) ----
        scaled = stream.Signature(row_layout(D, S, L, f=unsigned(self.f_bits))).create()
        # the numerator 2^M - 1, a layer constant: made from a register of M as a thermometer code
        # (no carry chain) into a register per copy; ``(1 << M) - 1`` from the parameter into
        # every copy's divider in one cycle was the 16-lane unit's path (14.8 ns, 10.6 of them
        # routing)
        if self.mode == "ivit":
            nums = iter([C((1 << 31) - 1, self.num_bits)] * self.recip_copies)
        else:
            m_bits = register(m, prm.recip_bits, "recip_bits")
            nums = iter(replicas(m, Cat(m_bits > k for k in range(self.num_bits)),
                                 self.recip_copies, "recip_num", reset_less=False))

        def reciprocal(name, i, o):
            m.submodules[f"{name}_div"] = div = SequentialDivider(
                self.num_bits, min(self.sum_bits, 64), bits_per_cycle=RECIP_BITS_PER_CYCLE,
                quotient_bits=self.f_bits)
            f = Signal(self.f_bits, name=f"{name}_f")
            with row_stage(m, name, i, o) as row:
                den = row.total
                if self.mode == "ivit":
                    den = Mux(row.total > (1 << 31) - 1, (1 << 31) - 1, row.total)
                num = next(nums)
                call(m, div, "RUN", lambda q: [f.eq(q)], "OUT")
            m.d.comb += [div.i.payload.num.eq(num), div.i.payload.den.eq(den),
                         *describe(o.payload, row, f=f)]

        stage_copies(m, "recip", summed, scaled, self.recip_copies, reciprocal)

        # ---- out: p = e * f >> shift, streamed with the row's framing ---------------------------
        # the shift and the clamp limit are the layer's constants, registered (params settle
        # long before a row's first exponential reaches this stage): no carry chain from the
        # parameters in front of the shifters (the 8x8 board build's path on one seed). The
        # shift amounts are copied per lane and shifter stage: a copy per four lanes still
        # crossed the chip (16 lanes out of context: 11.7 ns of routing), one lane's shifter is
        # where the placer puts its own copy
        if self.mode == "ivit":
            shift = (32 - prm.out_bits)[:7]
        else:                       # the rounding's half: one bit less than the final shift
            shift = (prm.recip_bits - prm.out_bits)[:7]
        byte_shifts = replicas(m, shift[3:], L, "byte_shift", reset_less=False)
        bit_shifts = replicas(m, shift[:3], L, "bit_shift", reset_less=False)
        limits = replicas(m, ((1 << (prm.out_bits - 1)[:5]) - 1)[:16], -(-L // LANES_PER_F),
                          "limit", reset_less=False)
        replay = RowReplay(m, e_r, scaled, L, "replay")
        p = Pipeline(m, "out", platform)
        res = p.result(self.o)
        # the word registered beside a copy of f per four lanes (one f reaching every lane's
        # multipliers was the unit's longest path), then both into the multipliers' registers
        word = p.stage(replay.o.payload.data, "word")
        fs = replicas(m, replay.o.payload.row.f, -(-L // LANES_PER_F), "f")
        ps = [split_product(p.product, p.stage, word[n * self.e_bits:(n + 1) * self.e_bits],
                            fs[n // LANES_PER_F], f"prod{n}") for n in range(L)]
        # the shift in two stages, whole bytes then the rest: a 64-bit barrel shifter by a 6-bit
        # amount in one cycle was the unit's path (five LUT levels after 7.4 ns of routing)
        bytes_ = [p.stage(q >> Cat(Const(0, 3), byte_shifts[n]), f"bytes{n}")
                  for n, q in enumerate(ps)]
        shifted = [b >> bit_shifts[n] for n, b in enumerate(bytes_)]
        if self.mode == "ivit":
            outs = [p.stage(v[:16], f"p{n}") for n, v in enumerate(shifted)]
        else:
            hs = [p.stage(v, f"half{n}") for n, v in enumerate(shifted)]
            rs = [p.stage((h + 1) >> 1, f"round{n}") for n, h in enumerate(hs)]
            lims = [limits[n // LANES_PER_F] for n in range(L)]
            outs = [p.stage(Mux(r > lim, lim, r)[:16], f"p{n}")
                    for n, (r, lim) in enumerate(zip(rs, lims))]
        depth = 2 + split_latency(self.e_bits, self.f_bits) + (1 if self.mode == "ivit" else 3)
        framed = p.delay(Cat(replay.o.payload.count, replay.o.payload.last), depth, "framing")
        m.d.comb += [Cat(res.count, res.last).eq(framed),
                     *[res.data[n].eq(v) for n, v in enumerate(outs)]]
        p.connect(replay.o, self.o, depth, lead=RowReplay.LATENCY)
        m.d.comb += load.release.eq(replay.done)
        return m
