"""``copies`` instances of a row unit working on consecutive rows at once.

The row units (Shiftmax, LayerNorm, ShiftGELU) take one row at a time and spend a fixed number of
cycles per row on their reciprocal / root, whatever the row length — for the short rows of
attention (sequence length) and LayerNorm (model width) that fixed cost dominates. Rows are
dealt round-robin to the copies and collected in the same order, so the output stream is the
input's row order, and ``copies`` rows overlap their fixed costs.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RowParallel"]


class RowParallel(wiring.Component):
    """Same members as the wrapped unit (``i``, ``o``, optional ``params`` and ``error``)."""

    def __init__(self, make_unit, copies: int):
        if not isinstance(copies, int) or copies < 1:
            raise ValueError(f"copies must be a positive integer, not {copies!r}")
        self.units = [make_unit() for _ in range(copies)]
        proto = self.units[0]
        members = {"i": In(proto.signature.members["i"].signature),
                   "o": Out(proto.signature.members["o"].signature)}
        if "params" in proto.signature.members:
            members["params"] = In(proto.signature.members["params"].shape)
        members["error"] = Out(1)
        self.out_bits = getattr(proto, "out_bits", None)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n = len(self.units)
        sel_in = Signal(range(n))
        sel_out = Signal(range(n))
        errors = 0
        for k, unit in enumerate(self.units):
            m.submodules[f"row{k}"] = unit
            m.d.comb += [unit.i.payload.eq(self.i.payload),
                         unit.i.valid.eq(self.i.valid & (sel_in == k))]
            if hasattr(unit, "params"):
                m.d.comb += unit.params.eq(self.params)
            if hasattr(unit, "error"):
                errors = errors | unit.error
            with m.If(sel_in == k):
                m.d.comb += self.i.ready.eq(unit.i.ready)
            with m.If(sel_out == k):
                m.d.comb += [self.o.valid.eq(unit.o.valid), self.o.payload.eq(unit.o.payload),
                             unit.o.ready.eq(self.o.ready)]
        m.d.comb += self.error.eq(errors)

        def advance(sel):
            return sel.eq(Mux(sel == n - 1, 0, sel + 1))

        with m.If(self.i.valid & self.i.ready & self.i.payload.last):
            m.d.sync += advance(sel_in)
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += advance(sel_out)
        return m
