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
Fully pipelined, one beat per cycle; back-pressure on ``o`` holds the pipeline (one enable for this
unit's registers only).

The bias needs no shifter of its own: with ``k = e - 16 >= 0``,
``(v + c·2^k) >> (e-1) = ((v >> k) + c) >> 15`` exactly (floor division nests, and ``c·2^k`` is a
multiple of ``2^k``), so each lane shifts the product by ``max(e - 16, 0)`` and, after adding
``c``, by at most 15 (a 64-bit barrel shifter per lane less: the requantisers were the most
congested nets of the board build).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .config import AcceleratorConfig
from .pipeline import Pipeline

__all__ = ["Requantizer", "lane_layout", "in_layout", "out_layout", "BIAS_FRAC_BITS", "LATENCY"]

BIAS_FRAC_BITS = 16
OUT_BITS = 16
RES_BITS = 16
STAGES = 6
LATENCY = STAGES + Pipeline.OUTPUT_LATENCY    # input to output, never stalled


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

    Latency :data:`LATENCY` cycles; throughput one beat (``requant_lanes`` elements) per cycle.
    ``x_bits``: input width (default: the array's accumulator width).
    """

    def __init__(self, config: AcceleratorConfig, x_bits: int | None = None):
        with validating(self):
            if not isinstance(config, AcceleratorConfig):
                raise TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        self._cfg = config
        super().__init__({"i": In(stream.Signature(in_layout(config, x_bits))),
                          "o": Out(stream.Signature(out_layout(config)))})

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        p = Pipeline(m, "rq", platform)
        res = p.result(self.o)
        flags = self.i.payload
        wide = p.delay(flags.wide, STAGES - 1, "wide")
        residual = p.delay(flags.residual, STAGES - 1, "residual")
        m.d.comb += res.last.eq(p.delay(flags.last, STAGES, "last"))

        for n in range(cfg.requant_lanes):
            ln = self.i.payload.lane[n]
            # s1: bias add; s2, s3: product (two registers so it maps onto pipelined DSPs)
            xb = p.stage(ln.x + ln.b, f"xb{n}")
            m1 = p.stage(ln.m, f"m{n}")
            e1, c1 = p.stage(ln.e, f"e{n}"), p.stage(ln.c, f"c{n}")
            r1, rm1, re1 = p.stage(ln.r, f"r{n}"), p.stage(ln.rm, f"rm{n}"), p.stage(
                ln.re, f"re{n}")
            prod = p.delay(xb * m1, 2, f"prod{n}")
            rprod = p.delay(r1 * rm1, 2, f"rprod{n}")
            e3, c3, re3 = (p.delay(e1, 2, f"e{n}"), p.delay(c1, 2, f"c{n}"),
                           p.delay(re1, 2, f"re{n}"))
            # s4: the product's shift above the bias's fraction bits, max(e - 16, 0)
            coarse = Mux(e3 > BIAS_FRAC_BITS, e3 - BIAS_FRAC_BITS, 0)[:6]
            w = p.stage(prod >> coarse, f"w{n}")
            c4 = p.stage(c3, f"c4_{n}")
            fine = p.stage(Mux(e3 > BIAS_FRAC_BITS, BIAS_FRAC_BITS, e3) - 1, f"fine{n}")
            rv = p.stage(rprod, f"rv{n}")
            re4 = p.stage(re3, f"re4_{n}")
            # s5: bias and rounding shift  (((w + c) >> (min(e, 16) - 1)) + 1) >> 1
            y = p.stage((((w + c4) >> fine[:4]) + 1) >> 1, f"y{n}")
            ry = p.stage(((rv >> (re4 - 1)[:6]) + 1) >> 1, f"ry{n}")
            # s6: residual add and clamp
            total = y + Mux(residual, ry, 0)
            hi = Mux(wide, (1 << (OUT_BITS - 1)) - 1, 127)
            lo = Mux(wide, -(1 << (OUT_BITS - 1)), -128)
            out = p.stage(Mux(total > hi, hi, Mux(total < lo, lo, total)), f"out{n}")
            m.d.comb += res.data[n].eq(out[:OUT_BITS])
        p.connect(self.i, self.o, STAGES)
        return m
