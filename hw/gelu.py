"""``dyad`` GELU unit: element-wise, no row reduction, no division; bit-exact with
:func:`gen.intops.gelu_poly`.

Per element: ``a = |q|``, segment ``a >> seg_shift`` selects quadratic coefficients from a
16-entry table, ``t`` is the offset in the segment, ``g = c0 + ((c1 + ((c2 t) >> s)) t >> s)``
rounded off ``GUARD`` guard bits (0 beyond the last segment), ``y = (relu(q) << frac_bits) - g``;
both products in registered multipliers (:func:`hw.pipeline.split_product`).
The table and shifts are run-time parameters (``params``), loaded by the controller per layer
from the constants :func:`gen.unit_params.gelu` computes at compile time; they must be stable
while elements flow. One element per lane per cycle, latency :data:`LATENCY`.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .pipeline import Pipeline, replicas, split_latency, split_product, vector_layout

__all__ = ["GeluUnit", "params_layout", "SEGMENTS", "COEF_BITS", "GUARD", "MAX_FRAC_BITS",
           "LATENCY"]

SEGMENTS = 16
COEF_BITS = 24
GUARD = 4
MAX_FRAC_BITS = 16
# t (at most 16 bits) times a coefficient-wide operand (c2, or v = c1 + u: one bit more)
PRODUCT = split_latency(16, COEF_BITS + 1)
# magnitude, segment, lookup; u = (c2 t) >> s; v; w = (v t) >> s; g; y
LATENCY = 3 + (PRODUCT + 1) + 1 + (PRODUCT + 1) + 2
LANES_PER_TABLE = 2
LOOKUP_BITS = 8          # coefficient bits per segment register


def params_layout() -> data.StructLayout:
    coef = data.ArrayLayout(signed(COEF_BITS), SEGMENTS)
    return data.StructLayout({"seg_shift": unsigned(5), "frac_bits": unsigned(5),
                              "segments": unsigned(5), "c0": coef, "c1": coef, "c2": coef})


class GeluUnit(wiring.Component):
    """Members: ``i`` (``in_bits`` signed elements, :func:`vector_layout`), ``o``
    (``in_bits + MAX_FRAC_BITS + 1``-bit signed results, same framing), ``params``."""

    def __init__(self, *, lanes: int, in_bits: int):
        with validating(self):
            if not isinstance(lanes, int) or lanes < 1:
                raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
            if in_bits not in (8, 16):
                raise ValueError(f"in_bits must be 8 or 16, not {in_bits!r}")
        self.lanes, self.in_bits = lanes, in_bits
        self.out_bits = in_bits + MAX_FRAC_BITS + 1
        super().__init__({"i": In(stream.Signature(vector_layout(in_bits, lanes))),
                          "o": Out(stream.Signature(vector_layout(self.out_bits, lanes))),
                          "params": In(params_layout())})

    def elaborate(self, platform):
        m = Module()
        p = Pipeline(m, "gelu", platform)
        res = p.result(self.o)
        prm = self.params
        m.d.comb += [res.count.eq(p.delay(self.i.payload.count, LATENCY, "count")),
                     res.last.eq(p.delay(self.i.payload.last, LATENCY, "last"))]
        # the coefficient table registered once per LANES_PER_TABLE lanes: each lane's lookup
        # reads a copy placed beside it (one shared table reaching every lane was the unit's
        # longest path); the table is stable while elements flow, so the copies always agree
        tables = replicas(m, Cat(prm.c0.as_value(), prm.c1.as_value(), prm.c2.as_value()),
                          -(-self.lanes // LANES_PER_TABLE), "coef")
        # the segment shift, fraction bits and segment count registered per lane: each lane's
        # three barrel shifters and its compare read their own copy (stable like the table)
        shape = data.StructLayout({"seg_shift": unsigned(5), "frac_bits": unsigned(5),
                                   "segments": unsigned(5)})
        shapes = replicas(m, Cat(prm.seg_shift, prm.frac_bits, prm.segments), self.lanes,
                          "shape")
        for n in range(self.lanes):
            q = self.i.payload.data[n]
            lane_shape = data.View(shape, shapes[n])
            shift = lane_shape.seg_shift
            table = data.View(data.ArrayLayout(params_layout()["c0"].shape, 3),
                              tables[n // LANES_PER_TABLE])
            # s1 magnitude, s2 segment and offset (the barrel shift), s3 coefficient lookup
            a = p.stage(Mux(q < 0, -q, q).as_unsigned()[:self.in_bits], f"a{n}")
            relu = p.delay(Mux(q > 0, q, 0), 3, f"relu{n}")
            # the segment in a register per coefficient: each drives ~100 lookup LUTs
            # the segment in a register per byte of the three coefficients (one per coefficient
            # still had to reach 96 lookup LUTs: 8 ns of routing)
            pieces = COEF_BITS // LOOKUP_BITS
            seg, *segs = replicas(m, a >> shift, 1 + 3 * pieces, f"seg{n}")
            t = p.delay((a & ((1 << shift) - 1))[:self.in_bits], 2, f"t{n}")

            def lookup(k, name):
                """Coefficient ``k`` of the lane's segment, a byte per segment register."""
                parts = [Array(table[k][s_][b * LOOKUP_BITS:(b + 1) * LOOKUP_BITS]
                               for s_ in range(SEGMENTS))[segs[k * pieces + b][:4]]
                         for b in range(pieces)]
                return p.stage(Cat(*parts).as_signed(), name)

            c0, c1, c2 = (lookup(k, f"{c}_{n}") for k, c in enumerate(("c0", "c1", "c2")))
            ins = p.stage(seg < lane_shape.segments, f"inside{n}")
            # t < 2^s, so |(c * t) >> s| <= |c|: u fits a coefficient, v = c1 + u and w one bit
            # more. Each product: operands into the multipliers' registers, partial products
            # summed, then >> s; v = c1 + u between them
            pu = split_product(p.product, p.stage, t, c2, f"pu{n}")
            u = p.stage((pu >> shift)[:COEF_BITS].as_signed(), f"u{n}")
            t3, c1d = p.delay(t, PRODUCT + 1, f"t3_{n}"), p.delay(c1, PRODUCT + 1, f"c1d{n}")
            v = p.stage(c1d + u, f"v{n}")
            t4 = p.stage(t3, f"t4_{n}")
            pw = split_product(p.product, p.stage, t4, v, f"pw{n}")
            w = p.stage((pw >> shift)[:COEF_BITS + 1].as_signed(), f"w{n}")
            at_w = 2 * (PRODUCT + 1) + 1                   # stages from the lookup to w
            c0d, ins6, relu6 = (p.delay(c0, at_w, f"c0d{n}"), p.delay(ins, at_w, f"ins{n}"),
                                p.delay(relu, at_w, f"relu6_{n}"))
            g = p.stage(Mux(ins6, (c0d + w + (1 << (GUARD - 1))) >> GUARD, 0), f"g{n}")
            relu7 = p.stage(relu6, f"relu7_{n}")
            y = p.stage((relu7 << lane_shape.frac_bits) - g, f"y{n}")
            m.d.comb += res.data[n].eq(y)
        p.connect(self.i, self.o, LATENCY)
        return m
