"""Lane gearboxes between the scratchpad's word (``wide`` elements: the array's width) and the
vector units (``narrow`` lanes, a divisor of it), so the units can be narrower than the array.

Both carry row streams of :func:`hw.pipeline.vector_layout` (``count`` valid lanes, ``last`` on a
row's final beat) and keep the canonical row shape: every beat of a row full except its last.

- :class:`LaneSplitter`: one wide beat → ``ceil(count / narrow)`` narrow beats, one per cycle;
  it takes the next wide beat in the cycle its last narrow beat leaves (no bubble).
- :class:`LaneGatherer`: ``wide / narrow`` narrow beats of a row (fewer at its end) → one wide beat,
  registered.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .checks import validating
from .pipeline import vector_layout

__all__ = ["LaneSplitter", "LaneGatherer"]


class _Gearbox(wiring.Component):
    """Checks the lane counts and builds the row-stream signature, ``i_lanes`` in, ``o_lanes``
    out (one of them ``wide``, the other ``narrow``)."""

    def __init__(self, width: int, wide: int, narrow: int, i_lanes: int, o_lanes: int):
        with validating(self):
            for name, v in (("wide", wide), ("narrow", narrow)):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"{name} must be a positive integer, not {v!r}")
            if wide % narrow:
                raise ValueError(f"narrow ({narrow} lanes) must divide wide ({wide} lanes)")
        self.wide, self.narrow = wide, narrow
        super().__init__({"i": In(stream.Signature(vector_layout(width, i_lanes))),
                          "o": Out(stream.Signature(vector_layout(width, o_lanes)))})


class LaneSplitter(_Gearbox):
    """``i``: ``wide``-lane beats; ``o``: ``narrow``-lane beats of ``width``-bit elements."""

    def __init__(self, width: int, wide: int, narrow: int):
        super().__init__(width, wide, narrow, wide, narrow)

    def elaborate(self, platform):
        W, L = self.wide, self.narrow
        m = Module()
        word = Signal.like(self.i.payload.data)     # the held beat; its head is the next output
        left = Signal(range(W + 1))                 # valid elements still held
        last, full = Signal(), Signal()
        final = left <= L                           # the held beat's last narrow beat
        o = self.o.payload
        m.d.comb += [self.o.valid.eq(full), o.count.eq(Mux(final, left, L)),
                     o.last.eq(last & final), self.i.ready.eq(~full | (self.o.ready & final))]
        m.d.comb += [o.data[j].eq(word[j]) for j in range(L)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [word.eq(self.i.payload.data), left.eq(self.i.payload.count),
                         last.eq(self.i.payload.last), full.eq(1)]
        with m.Elif(self.o.valid & self.o.ready):
            with m.If(final):
                m.d.sync += full.eq(0)
            with m.Else():
                m.d.sync += [word[j].eq(word[j + L]) for j in range(W - L)]
                m.d.sync += left.eq(left - L)
        return m


class LaneGatherer(_Gearbox):
    """``i``: ``narrow``-lane beats; ``o``: ``wide``-lane beats of ``width``-bit elements
    (registered). Lanes at and above ``count`` carry stale values."""

    def __init__(self, width: int, narrow: int, wide: int):
        super().__init__(width, wide, narrow, narrow, wide)

    def elaborate(self, platform):
        W, L = self.wide, self.narrow
        groups = W // L
        m = Module()
        held = Signal.like(self.o.payload.data)     # groups collected before the word's last
        pos = Signal(range(groups))                 # the group the next beat fills
        beat, o = self.i.payload, self.o.payload
        emit = (pos == groups - 1) | beat.last
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.If(emit):
                m.d.sync += [self.o.valid.eq(1), o.count.eq(pos * L + beat.count),
                             o.last.eq(beat.last), pos.eq(0)]
                m.d.sync += [o.data[g * L + j].eq(Mux(pos == g, beat.data[j], held[g * L + j]))
                             for g in range(groups) for j in range(L)]
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
                for g in range(groups - 1):
                    with m.If(pos == g):
                        m.d.sync += [held[g * L + j].eq(beat.data[j]) for j in range(L)]
        return m
