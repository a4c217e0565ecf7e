"""``dyad`` GELU unit: element-wise, no row reduction, no division; bit-exact with
:func:`gen.intops.gelu_poly`.

Per element: ``a = |q|``, segment ``a >> seg_shift`` selects quadratic coefficients from a
16-entry table, ``t`` is the offset in the segment, ``g = c0 + ((c1 + ((c2 t) >> s)) t >> s)``
rounded off ``GUARD`` guard bits (0 beyond the last segment), ``y = (relu(q) << frac_bits) - g``;
both products in registered multipliers (:func:`hw.pipeline.split_product`).
The table and shifts are run-time parameters (``params``), loaded by the controller per layer
from the constants :func:`gen.unit_params.gelu` computes at compile time; they must be stable
while elements flow. One element per lane per cycle, latency :data:`LATENCY`.

Each lane looks its coefficients up in its own copy of the table in LUT RAM (three 16 × 24-bit
memories, ``TRELLIS_DPR16X4`` on ECP5), rewritten one entry per cycle, round and round, from
``params``. A pulse on ``load`` says ``params`` changed (the cycle their registers take the new
value): the unit then takes no element until every entry has been rewritten since
(:data:`TABLE_REFRESH` cycles). The table in registers, copied per two lanes with a 16:1
multiplexer per coefficient bit, was 9 216 flip-flops at 16 lanes and did not route inside the
timing harness (router2 congestion).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .pipeline import Pipeline, register, replicas, split_latency, split_product, vector_layout

__all__ = ["GeluUnit", "params_layout", "SEGMENTS", "COEF_BITS", "GUARD", "MAX_FRAC_BITS",
           "LATENCY", "TABLE_REFRESH"]

SEGMENTS = 16
COEF_BITS = 24
GUARD = 4
MAX_FRAC_BITS = 16
# t (at most 16 bits) times a coefficient-wide operand (c2, or v = c1 + u: one bit more)
PRODUCT = split_latency(16, COEF_BITS + 1)
# magnitude, segment, lookup; u = (c2 t) >> s; v; w = (v t) >> s; g; y
LATENCY = 3 + (PRODUCT + 1) + 1 + (PRODUCT + 1) + 2
# cycles from a ``load`` pulse to a table rewritten from the new parameters: the entries chosen
# (SEGMENTS cycles, from the cycle after the pulse), in three registered steps, the write itself
TABLE_REFRESH = SEGMENTS + 6
SEGMENT_GROUP = 4        # entries chosen among by a group's own counter copy, then the groups
LANES_PER_WRITE = 4      # lanes sharing one copy of the table's write address and data


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
                          "params": In(params_layout()), "load": In(1)})

    def elaborate(self, platform):
        m = Module()
        p = Pipeline(m, "gelu", platform)
        res = p.result(self.o)
        prm = self.params
        m.d.comb += [res.count.eq(p.delay(self.i.payload.count, LATENCY, "count")),
                     res.last.eq(p.delay(self.i.payload.last, LATENCY, "last"))]
        # ---- the coefficient table: rewritten one entry per cycle into every lane's copy ----
        # The entry is chosen in two registered steps, within each group of SEGMENT_GROUP
        # entries by the group's own copy of the entry counter, then among the groups (one
        # counter choosing among all 16 entries of the 1 152 parameter bits was the harness's
        # path: 8.4 ns of routing to the far multiplexers)
        # (and then a group's counter choosing among its 288 bits: 9.6 ns of routing, so each
        # coefficient of a group has its own counter copy)
        coefs = [prm.c0, prm.c1, prm.c2]
        groups = SEGMENTS // SEGMENT_GROUP
        counters = [[Signal(range(SEGMENTS), name=f"entry_replica{g}_{k}")
                     for k in range(len(coefs))] for g in range(groups)]
        m.d.sync += [c.eq(c + 1) for group in counters for c in group]
        low = SEGMENT_GROUP.bit_length() - 1
        parts = [Cat(*(register(m, Array(coef[g * SEGMENT_GROUP:(g + 1) * SEGMENT_GROUP])[c[:low]],
                                f"table_part{g}_{k}")
                       for k, (coef, c) in enumerate(zip(coefs, counters[g]))))
                 for g in range(groups)]
        entry = register(m, counters[0][0], "entry")                # the entry parts hold
        # the chosen entry registered once before its copies beside the lanes (the choice
        # among the groups reaching the copies across the unit was the harness's path)
        chosen = register(m, Cat(entry, Array(parts)[entry[low:]]), "table_entry")
        writes = replicas(m, chosen, -(-self.lanes // LANES_PER_WRITE), "table_write")
        # no element until every entry has been rewritten since the last load
        since = Signal(range(TABLE_REFRESH + 1), name="since_load")
        fresh = Signal(name="table_fresh")
        with m.If(self.load):
            m.d.sync += [since.eq(0), fresh.eq(0)]
        with m.Elif(~fresh):
            m.d.sync += [since.eq(since + 1), fresh.eq(since == TABLE_REFRESH - 1)]
        gated = stream.Signature(self.i.payload.shape()).create()
        m.d.comb += [gated.payload.eq(self.i.payload), gated.valid.eq(self.i.valid & fresh),
                     self.i.ready.eq(gated.ready & fresh)]
        # the segment shift, fraction bits and segment count registered per lane: each lane's
        # three barrel shifters and its compare read their own copy (stable like the table)
        shape = data.StructLayout({"seg_shift": unsigned(5), "frac_bits": unsigned(5),
                                   "segments": unsigned(5)})
        shapes = replicas(m, Cat(prm.seg_shift, prm.frac_bits, prm.segments), self.lanes,
                          "shape")
        for n in range(self.lanes):
            q = gated.payload.data[n]
            lane_shape = data.View(shape, shapes[n])
            shift = lane_shape.seg_shift
            # s1 magnitude, s2 segment and offset (the barrel shift), s3 coefficient lookup
            a = p.stage(Mux(q < 0, -q, q).as_unsigned()[:self.in_bits], f"a{n}")
            relu = p.delay(Mux(q > 0, q, 0), 3, f"relu{n}")
            # the segment in a register per coefficient memory (each addresses its 6 LUT-RAM
            # blocks) and one for the range check
            seg, *segs = replicas(m, a >> shift, 1 + len(coefs), f"seg{n}")
            t = p.delay((a & ((1 << shift) - 1))[:self.in_bits], 2, f"t{n}")
            write = writes[n // LANES_PER_WRITE]

            def lookup(k, name):
                """Coefficient ``k`` of the lane's segment, from the lane's copy of the table."""
                mem = memory.Memory(shape=signed(COEF_BITS), depth=SEGMENTS, init=[])
                m.submodules[name + "_table"] = mem
                w, r = mem.write_port(), mem.read_port(domain="comb")
                at = len(entry) + k * COEF_BITS
                m.d.comb += [w.addr.eq(write[:len(entry)]), w.en.eq(1),
                             w.data.eq(write[at:at + COEF_BITS]),
                             r.addr.eq(segs[k][:len(entry)])]
                return p.stage(r.data, name)

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
        p.connect(gated, self.o, LATENCY)
        return m
