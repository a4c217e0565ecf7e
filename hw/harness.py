"""A register on every port of a unit, so that out-of-context place and route times every path.

Out of context, nextpnr leaves paths that start at a top-level input or end at a top-level output
out of the clock's Fmax. A unit's parameters and stream payloads are such inputs, so a unit
converted bare reports only its internal register-to-register paths: Shiftmax reported 86.9 MHz
while its parameter path (a register in the accelerator) limited the whole design to 60 MHz.
:class:`TimingHarness` has the unit's own ports, each through one flip-flop, as the accelerator
drives and reads them from registers. The harness is for timing only: a registered ``ready``
breaks the stream handshake, which no simulation of the harness would accept.
"""
from __future__ import annotations

from amaranth.hdl import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["TimingHarness"]


class TimingHarness(wiring.Component):
    """``unit`` (a :class:`wiring.Component`) with the same ports, each registered once.

    ``port_bits`` is the number of harness flip-flops (the width of every port together), to be
    taken from a place-and-route flip-flop count to get the unit's own."""

    def __init__(self, unit: wiring.Component):
        if not isinstance(unit, wiring.Component):
            raise TypeError(f"unit must be a wiring.Component, not {unit!r}")
        self._unit = unit
        super().__init__(wiring.Signature(dict(unit.signature.members.items())))
        self.port_bits = sum(len(Value.cast(value)) for _, _, value in self.signature.flatten(self))

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        outer = self.signature.flatten(self)
        inner = unit.signature.flatten(unit)
        for (path, member, mine), (path_u, _, theirs) in zip(outer, inner, strict=True):
            assert path == path_u
            if member.flow == In:
                m.d.sync += theirs.eq(mine)
            else:
                m.d.sync += mine.eq(theirs)
        return m
