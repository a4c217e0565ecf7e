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

from amaranth.hdl import Const, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .config import AcceleratorConfig
from .pipeline import Pipeline

__all__ = ["Requantizer", "lane_layout", "in_layout", "out_layout", "BIAS_FRAC_BITS", "LATENCY"]

BIAS_FRAC_BITS = 16
OUT_BITS = 16
RES_BITS = 16
STAGES = 9
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
        residual = p.delay(flags.residual, STAGES - 2, "residual")
        m.d.comb += res.last.eq(p.delay(flags.last, STAGES, "last"))

        for n in range(cfg.requant_lanes):
            ln = self.i.payload.lane[n]
            # s1: every input registered (the bias comes straight from the parameter table's
            # block RAM, 5.8 ns clock-to-output: on the board it went on into the bias add)
            x, b, mant, e, c = (p.stage(ln.x, f"x{n}"), p.stage(ln.b, f"b{n}"),
                                p.stage(ln.m, f"m{n}"), p.stage(ln.e, f"e{n}"),
                                p.stage(ln.c, f"c{n}"))
            r, rm, re = p.stage(ln.r, f"r{n}"), p.stage(ln.rm, f"rm{n}"), p.stage(ln.re, f"re{n}")
            # s2: bias add; the shift amounts from the exponent (no compare or subtract in front
            # of a shifter); s3, s4: the products (two registers: pipelined DSPs)
            xb, m2 = p.stage(x + b, f"xb{n}"), p.stage(mant, f"m2_{n}")
            coarse = p.stage(Mux(e > BIAS_FRAC_BITS, e - BIAS_FRAC_BITS, 0)[:6], f"coarse{n}")
            fine = p.stage((Mux(e > BIAS_FRAC_BITS, BIAS_FRAC_BITS, e) - 1)[:4], f"fine{n}")
            c2, r2, rm2 = p.stage(c, f"c2_{n}"), p.stage(r, f"r2_{n}"), p.stage(rm, f"rm2_{n}")
            rshift = p.stage((re - 1)[:6], f"rshift{n}")
            prod = p.delay(xb * m2, 2, f"prod{n}")
            rprod = p.delay(r2 * rm2, 2, f"rprod{n}")
            # s3: the rounding's half folded into the bias: ((v >> f) + 1) >> 1 = (v + 2^f) >>
            # (f + 1), so the rounding needs no carry chain of its own
            c_half = p.delay(c2 + (Const(1, 16) << fine)[:16], 3, f"chalf{n}")
            shift = p.delay(fine + 1, 4, f"shift{n}")
            coarse4, rshift4 = p.delay(coarse, 2, f"coarse{n}"), p.delay(rshift, 2, f"rsh{n}")
            # s5: the product's shift above the bias's fraction bits, max(e - 16, 0)
            w, rs = p.stage(prod >> coarse4, f"w{n}"), p.stage(rprod >> rshift4, f"rs{n}")
            # s6: bias and rounding half; s7: the rounding shift, by min(e, 16)
            wc, ry = p.stage(w + c_half, f"wc{n}"), p.stage((rs + 1) >> 1, f"ry{n}")
            y, ry7 = p.stage(wc >> shift, f"y{n}"), p.stage(ry, f"ry7_{n}")
            # s8: residual add; s9: clamp
            total = p.stage(y + Mux(residual, ry7, 0), f"total{n}")
            hi = Mux(wide, (1 << (OUT_BITS - 1)) - 1, 127)
            lo = Mux(wide, -(1 << (OUT_BITS - 1)), -128)
            out = p.stage(Mux(total > hi, hi, Mux(total < lo, lo, total)), f"out{n}")
            m.d.comb += res.data[n].eq(out[:OUT_BITS])
        p.connect(self.i, self.o, STAGES)
        return m
