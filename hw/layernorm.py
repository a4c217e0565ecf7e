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
and bias of the requantizer that follows (``gen.quantize`` folds them there).

The row is stored in a ring slot (:mod:`hw.rowbuffer`) while ``sum(x)``, ``sum(x^2)`` and ``C``
accumulate; ``var`` then follows without a second pass, as ``sum(x^2) - mean * (sum(x) + d)`` with
``d = sum(x) - C * mean`` (exact in integers). Mean, root and reciprocal are per-row stages with
their own engine each (``ivit``: one divider per Newton step), so consecutive rows overlap them;
a stage slower than the longest row comes in copies that take rows in turn (``stage_copies``), so
that rows of ``max_row`` elements stream at one beat per cycle (shorter rows at one row per
slowest stage / its copies). The bench prints the measured throughput.
"""
from __future__ import annotations

import math

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import dsp, pipeline
from .bram import RegisteredReadMemory
from .checks import check_row_unit, validating
from .divider import SequentialDivider
from .isqrt import SequentialSqrt
from .pipeline import (
    Pipeline,
    delay,
    register,
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
    ring_slots,
    row_layout,
    row_stage,
    stage_copies,
)

__all__ = ["LayerNorm", "OUT_BITS"]

OUT_BITS = 32
IVIT_NEWTON_STEPS = 10
# one result bit per cycle for the mean, root and reciprocal engines: two chained steps (compare,
# subtract on 31-48 bits) limited the unit to 54 MHz (root) and 69 MHz (reciprocal); the stages'
# copies make up for the longer latency. ivit's ten Newton dividers too (radix 4 limited it to
# 61 MHz).
ENGINE_BITS_PER_CYCLE = 1
LANES_PER_F = 4         # lanes sharing one copy of the row's reciprocal


class LayerNorm(wiring.Component):
    """Members: ``i`` (signed ``in_bits`` elements, row framing), ``o`` (32-bit normalised values,
    same framing), ``error`` (sticky: a row longer than ``max_row``; its excess was dropped)."""

    def __init__(self, *, mode: str, lanes: int, in_bits: int = 16, max_row: int = 1024,
                 split_engines: bool = False):
        with validating(self):
            check_row_unit(mode=mode, lanes=lanes, in_bits=in_bits, max_row=max_row,
                           max_row_limit=1024)
        self.mode, self.lanes, self.in_bits, self.max_row = mode, lanes, in_bits, max_row
        # ``split_engines``: the wide engines (root, Newton steps, reciprocal: 44-bit remainders)
        # take two cycles per bit, the subtraction and then the choice (``split_steps``): a 44-bit
        # compare-subtract and the bit's fan-out to the remainder in one cycle were the 16-lane
        # unit's paths (dyad 10.0 ns, ivit 11.5 ns); rows shorter than the engines' latency then
        # wait twice as long. The mean's divider (a 12-bit remainder) keeps one cycle per bit
        self.split = split = split_engines
        self.depth = -(-max_row // lanes)
        log_c = math.ceil(math.log2(max_row + 1))
        self.sum_bits = in_bits + log_c + 1
        self.var_bits = 2 * (in_bits + 1) + log_c
        vb = self.var_bits
        # cycles per row of each stage (rows overlap their stages): take the descriptor, hand
        # over operands, the engine, offer the result (+ the mean's rounding and variance states)
        stages = ([SequentialDivider.cycles(in_bits, ENGINE_BITS_PER_CYCLE) + 14]
                  + ([SequentialSqrt.cycles(vb, ENGINE_BITS_PER_CYCLE, split) + 3]
                     if mode == "dyad" else
                     [SequentialDivider.cycles(vb, ENGINE_BITS_PER_CYCLE, split) + 3]
                     * IVIT_NEWTON_STEPS)
                  + [SequentialDivider.cycles(31, ENGINE_BITS_PER_CYCLE, split) + 3])
        self.stage_copies = [-(-c // self.depth) for c in stages]
        self.slots = ring_slots(sum(stages) + 8, self.depth)
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(OUT_BITS, lanes))),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        L, W, D, S = self.lanes, self.in_bits, self.depth, self.slots
        vb = self.var_bits
        n_bits = self.max_row.bit_length()
        m.submodules.rowbuf = rowbuf = RegisteredReadMemory(L * W, S * D)
        row_w, row_r = rowbuf.write, rowbuf.read

        # ---- load: the row into its slot; its sum, sum of squares and length --------------------
        load = RowLoader(m, self.i, row_w, D, S, L, self.error)
        beat = load.beat

        # the masked lanes registered, and their squares in the multipliers' own registers and
        # once more in the fabric (a multiplier's output routed straight into an adder placed
        # 45 columns away was the 16-lane unit's path), then adder trees registered at every
        # level; the beat's tag alongside
        def reg(v, name):
            return register(m, v, name)

        live = [reg(Mux(beat.live[n], beat.data[n], 0), f"live{n}") for n in range(L)]
        squares = [reg(dsp.product(m, platform, x, x, f"square{n}"), f"square{n}_q")
                   for n, x in enumerate(live)]
        beat_sum = delay(m, tree_sum(live, stage=reg), dsp.LATENCY + 1, "beat_sum")
        square_sum = tree_sum(squares, stage=reg)
        tag = delay(m, beat, tree_levels(L) + 1 + dsp.LATENCY + 1, "sums_tag")
        total = Signal(signed(self.sum_bits))
        sumsq = Signal(vb)
        n_elems = Signal(n_bits)
        # a row's first beat chooses after the adds (a row's first beat clearing the running
        # sum of squares before its 45-bit carry chain was the 16-lane unit's path)
        row_total = Mux(tag.first, beat_sum, total + beat_sum)
        row_sumsq = Mux(tag.first, square_sum, sumsq + square_sum)
        row_n = Mux(tag.first, tag.count, n_elems + tag.count)
        with m.If(tag.valid):
            m.d.sync += [total.eq(row_total), sumsq.eq(row_sumsq), n_elems.eq(row_n)]
        loaded = finished_rows(m, row_layout(D, S, L, total=signed(self.sum_bits),
                                             sumsq=unsigned(vb), n=unsigned(n_bits)),
                               S, tag, "loaded", total=total, sumsq=sumsq, n=n_elems)

        # ---- per-row stages, each in ``copies`` taking rows in turn ---------------------------
        def layout(**fields):
            return row_layout(D, S, L, mean=signed(W + 1), **fields)

        centred = stream.Signature(layout(var=unsigned(vb))).create()
        rooted = stream.Signature(layout(std=unsigned(vb))).create()
        scaled = stream.Signature(layout(f=unsigned(31))).create()
        newton = layout(var=unsigned(vb), k=unsigned(vb))

        def mean_and_variance(name, i, o):
            """mean = round_half_even(total / n) from the remainder; with d = total - n * mean
            (|d| <= n / 2), var = sumsq - mean * (total + d) = sum((x - mean)^2) exactly."""
            m.submodules[f"{name}_div"] = div = SequentialDivider(
                self.sum_bits, n_bits, ENGINE_BITS_PER_CYCLE, quotient_bits=W)
            q0 = Signal(W, name=f"{name}_q0")
            rem = Signal(self.sum_bits, name=f"{name}_rem")
            off = Signal(signed(self.sum_bits + 1), name=f"{name}_off")
            mag_mean = Signal(W + 1, name=f"{name}_mag_mean")
            up = Signal(name=f"{name}_up")                  # round the quotient up
            mean = Signal(signed(W + 1), name=f"{name}_mean")
            d = Signal(signed(n_bits + 1), name=f"{name}_d")
            sd = Signal(signed(self.sum_bits + 1), name=f"{name}_sd")      # total + d
            var = Signal(vb, name=f"{name}_var")

            def multiply(a, b, name):
                return dsp.product(m, platform, a, b, name)

            def wait(state, cycles, then):
                """``cycles`` states from ``state``: a registered product's latency."""
                for k in range(cycles):
                    with m.State(f"{state}{k}"):
                        m.next = f"{state}{k + 1}" if k + 1 < cycles else then

            with row_stage(m, name, i, o) as row:
                # registered products of the stage's operands (stable while they are used)
                qn = multiply(q0, row.n, f"{name}_qn")
                msd = split_product(multiply, lambda v, n: register(m, v, n), mean, sd,
                                    f"{name}_msd")                           # mean * (total + d)
                neg = row.total < 0
                # |total| in a register, for the division (a cycle after the row is taken: the
                # negation's carry chain in front of the divider's operand registers was the
                # 16-lane unit's path) and the remainder (the negation and the subtraction in
                # one cycle were the unit's path, 8.8 ns)
                mag_q = register(m, Mux(neg, -row.total, row.total), f"{name}_mag")
                with m.State("RUN"):
                    m.next = "DIVIDE"
                call(m, div, "DIVIDE", lambda q: [q0.eq(q)], "PRODUCT0")
                wait("PRODUCT", dsp.LATENCY, "REMAINDER")
                with m.State("REMAINDER"):
                    m.d.sync += rem.eq(mag_q - qn)
                    m.next = "ROUND"
                with m.State("ROUND"):
                    m.d.sync += up.eq(((rem << 1) > row.n) | (((rem << 1) == row.n) & q0[0]))
                    m.next = "OFFSET"
                with m.State("OFFSET"):                   # |total| - n * |mean|, then its sign
                    m.d.sync += [off.eq(rem - Mux(up, row.n, 0)), mag_mean.eq(q0 + up)]
                    m.next = "SIGN"
                with m.State("SIGN"):
                    m.d.sync += [mean.eq(Mux(neg, -mag_mean, mag_mean)),
                                 d.eq(Mux(neg, -off, off))]
                    m.next = "SUM"
                # one operation per state (the sum, product and difference in one cycle: 18 ns)
                with m.State("SUM"):
                    m.d.sync += sd.eq(row.total + d)
                    m.next = "SCALE0"
                wait("SCALE", split_latency(len(mean), len(sd)), "VARIANCE")
                with m.State("VARIANCE"):
                    m.d.sync += var.eq(row.sumsq - msd)
                    m.next = "OUT"
            m.d.comb += [div.i.payload.num.eq(mag_q), div.i.payload.den.eq(row.n),
                         *describe(o.payload, row, mean=mean, var=var)]

        def root(name, i, o):
            """dyad: std = max(isqrt(var), 1), exact."""
            m.submodules[f"{name}_sqrt"] = sqrt = SequentialSqrt(vb, ENGINE_BITS_PER_CYCLE,
                                                                   self.split)
            std = Signal(vb, name=f"{name}_std")
            with row_stage(m, name, i, o) as row:
                call(m, sqrt, "RUN", lambda r: [std.eq(Mux(r == 0, 1, r))], "OUT")
            m.d.comb += [sqrt.i.payload.eq(row.var),
                         *describe(o.payload, row, mean=row.mean, std=std)]

        def newton_step(first):
            """ivit: k = (k + var // k) >> 1, from k = 2^16."""
            def build(name, i, o):
                m.submodules[f"{name}_div"] = div = SequentialDivider(
                    vb, vb, ENGINE_BITS_PER_CYCLE, split_steps=self.split)
                k = Signal(vb, name=f"{name}_k")
                with row_stage(m, name, i, o) as row:
                    k_in = (1 << 16) if first else row.k
                    call(m, div, "RUN", lambda q: [k.eq((k_in + q) >> 1)], "OUT")
                m.d.comb += [div.i.payload.num.eq(row.var), div.i.payload.den.eq(k_in),
                             *describe(o.payload, row, mean=row.mean, var=row.var, k=k)]
            return build

        def reciprocal(name, i, o):
            """f = (2^31 - 1) // std."""
            m.submodules[f"{name}_div"] = div = SequentialDivider(
                31, vb, ENGINE_BITS_PER_CYCLE, split_steps=self.split)
            f = Signal(31, name=f"{name}_f")
            with row_stage(m, name, i, o) as row:
                call(m, div, "RUN", lambda q: [f.eq(q)], "OUT")
            m.d.comb += [div.i.payload.num.eq((1 << 31) - 1), div.i.payload.den.eq(row.std),
                         *describe(o.payload, row, mean=row.mean, f=f)]

        copies = iter(self.stage_copies)
        stage_copies(m, "mean", loaded, centred, next(copies), mean_and_variance)
        if self.mode == "dyad":
            stage_copies(m, "root", centred, rooted, next(copies), root)
        else:
            src = centred
            for step in range(IVIT_NEWTON_STEPS):
                dst = stream.Signature(newton).create()
                stage_copies(m, f"newton{step}", src, dst, next(copies), newton_step(step == 0))
                src = dst
            m.d.comb += [*describe(rooted.payload, src.payload, mean=src.payload.mean,
                                   std=Mux(src.payload.k == 0, 1, src.payload.k)),
                         rooted.valid.eq(src.valid), src.ready.eq(rooted.ready)]
        stage_copies(m, "recip", rooted, scaled, next(copies), reciprocal)

        # ---- out: the replayed row through (x - mean) * f >> 1 ----------------------------------
        replay = RowReplay(m, row_r, scaled, L)
        m.d.comb += load.release.eq(replay.done)
        src = replay.o.payload
        p = Pipeline(m, "out", platform)
        res = p.result(self.o)
        # x and the mean registered (the mean once per four lanes: one mean reaching every
        # lane's subtraction was the 16-lane unit's path, 5.1 ns of routing), y = x - mean
        # registered, then y and f into the multipliers' input registers
        groups = -(-L // LANES_PER_F)
        xs = [p.stage(src.data[n * W:(n + 1) * W].as_signed(), f"x{n}") for n in range(L)]
        means = pipeline.replicas(m, src.row.mean, groups, "mean")
        ys = [p.stage(x - means[n // LANES_PER_F], f"y{n}") for n, x in enumerate(xs)]
        # f registered twice, the second time once per four lanes (one f reaching all 2L
        # multipliers was the path)
        fs = pipeline.replicas(m, register(m, src.row.f, "f_early"), groups, "f")
        outs = [(split_product(p.product, p.stage, y, fs[n // LANES_PER_F], f"out{n}") >> 1)
                [:OUT_BITS] for n, y in enumerate(ys)]
        depth = 2 + split_latency(len(ys[0]), len(fs[0]))
        framed = p.delay(Cat(src.count, src.last), depth, "framing")
        m.d.comb += [Cat(res.count, res.last).eq(framed),
                     *[res.data[n].eq(v) for n, v in enumerate(outs)]]
        p.connect(replay.o, self.o, depth, lead=RowReplay.LATENCY)
        return m
