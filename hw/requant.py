"""Dyadic requantizers, ``requant_lanes`` of them (default: one per scratchpad word element):
bit-exact with :func:`gen.intops.requant` / ``requant_sum``.

Per lane and beat::

    x' = x + b                                   # accumulator + int32 layer bias
    y  = round((x' * m + (c << (e - 16))) / 2^e) # round half up, as ((v >> (e-1)) + 1) >> 1
    y += round(r * rm / 2^re)                    # optional residual term (when ``residual``)
    out = clamp(y, 16 if wide else 8 bits)

``m`` is a signed mantissa of ``mbits`` magnitude bits (per channel), ``e`` in ``[1, 62]``; ``c`` is
a folded-LayerNorm beta with 16 fraction bits below the output LSB (it requires ``e >= 16``, which
the quantizer guarantees; with ``e < 16`` it is added unshifted, as the bench's golden model does).
Fully pipelined (:class:`hw.pipeline.Pipeline`: free-running registers, results queued), one beat
per cycle. Every stage holds at most one carry chain or one shifter, with the shift amounts
computed from the exponent a stage ahead; the rounding needs no increment of its own:
``((v >> f) + 1) >> 1 = (v + 2^f) >> (f + 1)``, and ``2^f`` is added to ``c`` beside the product.

The bias needs no shifter of its own: with ``k = e - 16 >= 0``,
``(v + c·2^k) >> (e-1) = ((v >> k) + c) >> 15`` exactly (floor division nests, and ``c·2^k`` is a
multiple of ``2^k``), so each lane shifts the product by ``max(e - 16, 0)`` and, after adding
``c``, by at most 15 (a 64-bit barrel shifter per lane less: the requantisers were the most
congested nets of the board build).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .config import AcceleratorConfig
from .pipeline import Pipeline, split_latency, split_product

__all__ = ["Requantizer", "lane_layout", "in_layout", "out_layout", "BIAS_FRAC_BITS"]

BIAS_FRAC_BITS = 16
OUT_BITS = 16
RES_BITS = 16
# stages besides the products: inputs, bias add, the shift by the amount's multiple of 8, by its
# rest, bias and half, the rounding shift (by 8s, then the rest), residual (low half, high half),
# clamp compares, clamp choice
STAGES_BESIDE_PRODUCTS = 11


def two_stage_shift(p: Pipeline, value, amount, name: str):
    """``value >> amount`` two pipeline stages later: by the amount's multiple of 8 (one 8:1
    multiplexer level), then by the rest."""
    coarse = p.stage(value >> Cat(Const(0, 3), amount[3:]), f"{name}_by8")
    return p.stage(coarse >> p.stage(amount[:3], f"{name}_rest"), name)


def split_add(p: Pipeline, a, b, name: str):
    """``a + b`` (signed) two pipeline stages later: the low half's sum and carry, then the high
    half's, each one carry chain of half the width."""
    width = max(len(a), len(b)) + 1
    half = width // 2
    a_ext, b_ext = Signal(signed(width), name=f"{name}_a"), Signal(signed(width), name=f"{name}_b")
    p.m.d.comb += [a_ext.eq(a), b_ext.eq(b)]
    low = p.stage(a_ext[:half] + b_ext[:half], f"{name}_lo")
    a_hi, b_hi = p.stage(a_ext[half:], f"{name}_a_hi"), p.stage(b_ext[half:], f"{name}_b_hi")
    return p.stage(Cat(low[:half], (a_hi + b_hi + low[half])[:width - half]).as_signed(), name)


class ClampTests:
    """Whether a signed value lies beyond the 8-bit and the ``OUT_BITS`` clamp bounds, in two
    steps: the constructor registers, per group of at most 16 bits above the 8-bit bound,
    whether any bit is set and whether all are (two LUT levels; one test over the 60 bits above
    the bound was four, the requantiser's path at 142 MHz); :meth:`over` and :meth:`under`
    combine the groups the next cycle."""

    def __init__(self, p: Pipeline, v, name: str):
        width = len(v)
        cuts = [7, OUT_BITS - 1, *range(OUT_BITS + 15, width - 1, 16), width - 1]
        groups = [v[lo:hi] for lo, hi in zip(cuts, cuts[1:])]
        self.sign = p.stage(v[-1], f"{name}_sign")
        self.any = p.stage(Cat(g.any() for g in groups), f"{name}_any")
        self.all = p.stage(Cat(g.all() for g in groups), f"{name}_all")

    def over(self, wide):
        """``v > 127``, or with ``wide`` ``v > 2^(OUT_BITS-1) - 1`` (group 0 holds the bits the
        wide bound allows)."""
        return ~self.sign & (self.any[1:].any() | (~wide & self.any[0]))

    def under(self, wide):
        """``v < -128``, or with ``wide`` ``v < -2^(OUT_BITS-1)``."""
        return self.sign & (~self.all[1:].all() | (~wide & ~self.all[0]))


def lane_layout(cfg: AcceleratorConfig, x_bits: int | None = None) -> data.StructLayout:
    return data.StructLayout({
        "x": signed(x_bits or cfg.acc_bits), "b": signed(32),
        "m": signed(cfg.mbits + 1), "e": unsigned(6), "c": signed(32),
        "r": signed(RES_BITS), "rm": signed(cfg.mbits + 1), "re": unsigned(6),
    })


def in_layout(cfg: AcceleratorConfig, x_bits: int | None = None) -> data.StructLayout:
    return data.StructLayout({"lane": data.ArrayLayout(lane_layout(cfg, x_bits), cfg.requant_lanes),
                              "wide": 1, "residual": 1, "last": 1})


def out_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(OUT_BITS), cfg.requant_lanes),
                              "last": 1})


class Requantizer(wiring.Component):
    """Members: ``i`` (In stream of :func:`in_layout`), ``o`` (Out stream of :func:`out_layout`).

    Latency ``latency`` cycles (input to output, never stalled; it grows with the operand
    widths, see :meth:`product_stages`); throughput one beat (``requant_lanes`` elements) per
    cycle. ``x_bits``: input width (default: the array's accumulator width).
    """

    def __init__(self, config: AcceleratorConfig, x_bits: int | None = None):
        with validating(self):
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self._cfg = config
        lane = lane_layout(config, x_bits)
        self.product_latency = self.product_stages(lane)
        self.stages = STAGES_BESIDE_PRODUCTS + self.product_latency
        self.latency = self.stages + Pipeline.OUTPUT_LATENCY
        super().__init__({"i": In(stream.Signature(in_layout(config, x_bits))),
                          "o": Out(stream.Signature(out_layout(config)))})

    @staticmethod
    def product_stages(lane: data.StructLayout) -> int:
        """Cycles of the two products (``(x + b) * m``, ``r * rm``), each cut into 18-bit pieces
        in the multipliers' own registers (:func:`hw.pipeline.split_product`); the shorter one
        waits for the longer. A wide ``*`` left to yosys became multipliers and their adders in
        one cycle (16.4 ns: the 16-lane, 31-bit-mantissa requantiser's path)."""
        xb_bits = max(lane["x"].shape.width, lane["b"].shape.width) + 1
        return max(split_latency(xb_bits, lane["m"].shape.width),
                   split_latency(lane["r"].shape.width, lane["rm"].shape.width))

    def elaborate(self, platform):
        cfg = self._cfg
        stages = self.stages
        m = Module()
        p = Pipeline(m, "rq", platform)
        res = p.result(self.o)
        flags = self.i.payload
        wide = p.delay(flags.wide, stages - 2, "wide")
        residual = p.delay(flags.residual, stages - 5, "residual")      # then a copy per lane
        m.d.comb += res.last.eq(p.delay(flags.last, stages, "last"))

        for n in range(cfg.requant_lanes):
            ln = self.i.payload.lane[n]
            # s1: every input registered (the bias comes straight from the parameter table's
            # block RAM, 5.8 ns clock-to-output: on the board it went on into the bias add)
            x, b, mant, e, c = (p.stage(ln.x, f"x{n}"), p.stage(ln.b, f"b{n}"),
                                p.stage(ln.m, f"m{n}"), p.stage(ln.e, f"e{n}"),
                                p.stage(ln.c, f"c{n}"))
            r, rm, re = p.stage(ln.r, f"r{n}"), p.stage(ln.rm, f"rm{n}"), p.stage(ln.re, f"re{n}")
            # s2: bias add; the shift amounts from the exponent (no compare or subtract in front
            # of a shifter); then the products (P = product_stages cycles)
            xb, m2 = p.stage(x + b, f"xb{n}"), p.stage(mant, f"m2_{n}")
            coarse = p.stage(Mux(e > BIAS_FRAC_BITS, e - BIAS_FRAC_BITS, 0)[:6], f"coarse{n}")
            fine = p.stage((Mux(e > BIAS_FRAC_BITS, BIAS_FRAC_BITS, e) - 1)[:4], f"fine{n}")
            c2, r2, rm2 = p.stage(c, f"c2_{n}"), p.stage(r, f"r2_{n}"), p.stage(rm, f"rm2_{n}")
            rshift = p.stage((re - 1)[:6], f"rshift{n}")
            P = self.product_latency
            prod, rprod = (p.delay(split_product(p.product, p.stage, a, b, f"{name}{n}"),
                                   P - split_latency(len(a), len(b)), f"{name}{n}_wait")
                           for a, b, name in ((xb, m2, "prod"), (r2, rm2, "rprod")))
            # the rounding's half folded into the bias: ((v >> f) + 1) >> 1 = (v + 2^f) >>
            # (f + 1), so the rounding needs no carry chain of its own
            c_half = p.delay(c2 + (Const(1, 16) << fine)[:16], P + 2, f"chalf{n}")
            shift = p.delay(fine + 1, P + 3, f"shift{n}")
            coarse4, rshift4 = p.delay(coarse, P, f"coarse{n}"), p.delay(rshift, P, f"rsh{n}")
            # the product's shift above the bias's fraction bits, max(e - 16, 0), and the
            # residual product's; each in two stages (a 64-bit shifter by 6 bits in one stage
            # was the 8-lane requantiser's longest path)
            w = two_stage_shift(p, prod, coarse4, f"w{n}")
            rs = two_stage_shift(p, rprod, rshift4, f"rs{n}")
            # bias and rounding half; then the rounding shift, by min(e, 16)
            wc, ry = p.stage(w + c_half, f"wc{n}"), p.stage((rs + 1) >> 1, f"ry{n}")
            # (in two stages too: its amount register → four LUT levels was the next path)
            y, ry7 = two_stage_shift(p, wc, shift, f"y{n}"), p.delay(ry, 2, f"ry7_{n}")
            # residual add, its flag copied per lane (one flag reaching every lane's adder was
            # the 8-lane requantiser's path, 5.1 ns of routing), in two carry-chain halves (the
            # flag → a 67-bit carry chain was the next); the clamp's compares for both output
            # widths (the width flag choosing the bounds in front of two compares and the
            # choice was 13.5 ns), as tests of the bits above the bounds (no carry chain); then
            # the choice, with the width flag copied per lane
            residual_n = p.stage(residual, f"residual_replica{n}")
            total = split_add(p, y, Mux(residual_n, ry7, 0), f"total{n}")
            top = (1 << (OUT_BITS - 1)) - 1
            beyond = ClampTests(p, total, f"beyond{n}")
            kept, wide_n = p.stage(total, f"kept{n}"), p.stage(wide, f"wide_replica{n}")
            over, under = beyond.over(wide_n), beyond.under(wide_n)
            hi, lo = Mux(wide_n, top, 127), Mux(wide_n, -top - 1, -128)
            out = p.stage(Mux(over, hi, Mux(under, lo, kept)), f"out{n}")
            m.d.comb += res.data[n].eq(out[:OUT_BITS])
        p.connect(self.i, self.o, stages)
        return m
