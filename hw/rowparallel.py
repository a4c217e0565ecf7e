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

__all__ = ["RowParallel", "round_robin"]


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
        errors = 0
        for k, unit in enumerate(self.units):
            m.submodules[f"row{k}"] = unit
            if hasattr(unit, "params"):
                m.d.comb += unit.params.eq(self.params)
            if hasattr(unit, "error"):
                errors = errors | unit.error
        m.d.comb += self.error.eq(errors)
        round_robin(m, self.i, self.o, [u.i for u in self.units], [u.o for u in self.units],
                    self.i.payload.last, self.o.payload.last)
        return m


def round_robin(m: Module, i, o, ins, outs, i_end=1, o_end=1, name: str = "rr") -> None:
    """Deals the items of stream ``i`` to the streams ``ins`` in turn and collects the items of
    ``outs`` onto ``o`` in the same order. An item ends on a transfer where ``i_end`` (``o_end``)
    is high: each transfer by default, a row's last beat for row streams."""
    n = len(ins)
    sel_in = Signal(range(n), name=f"{name}_in")
    sel_out = Signal(range(n), name=f"{name}_out")
    for k, (a, b) in enumerate(zip(ins, outs)):
        m.d.comb += [a.payload.eq(i.payload), a.valid.eq(i.valid & (sel_in == k))]
        with m.If(sel_in == k):
            m.d.comb += i.ready.eq(a.ready)
        with m.If(sel_out == k):
            m.d.comb += [o.valid.eq(b.valid), o.payload.eq(b.payload), b.ready.eq(o.ready)]

    def advance(sel):
        return sel.eq(Mux(sel == n - 1, 0, sel + 1))

    with m.If(i.valid & i.ready & i_end):
        m.d.sync += advance(sel_in)
    with m.If(o.valid & o.ready & o_end):
        m.d.sync += advance(sel_out)
