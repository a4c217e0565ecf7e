"""Row loading shared by the row units (Shiftmax, ShiftGELU, LayerNorm).

A row arrives as beats (``count`` valid lanes, ``last`` on the final one) and is written into a
one-beat-per-word buffer. Rows longer than the buffer set the unit's sticky ``error`` and their
excess beats are dropped, so a bad row can never overrun the memory or hang the unit.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal

__all__ = ["load_beats"]


def load_beats(m: Module, i, write_port, ptr, depth: int, error, beats, last_count, on_beat=()):
    """Body of a LOAD state: accept ``i``, store each beat at ``ptr``, apply ``on_beat`` (sync
    assignments) per accepted beat. Returns a signal that is high on the row's last beat (the
    caller moves to its next state on it); ``beats`` and ``last_count`` then hold the row's
    framing."""
    done = Signal()
    m.d.comb += [i.ready.eq(1), write_port.addr.eq(ptr),
                 write_port.data.eq(i.payload.data.as_value()),
                 write_port.en.eq(i.valid & (ptr < depth))]
    with m.If(i.valid):
        m.d.sync += list(on_beat)
        with m.If(ptr < depth):
            m.d.sync += ptr.eq(ptr + 1)
        with m.Else():
            m.d.sync += error.eq(1)
        with m.If(i.payload.last):
            m.d.comb += done.eq(1)
            m.d.sync += [beats.eq(Mux(ptr < depth, ptr + 1, ptr)),
                         last_count.eq(i.payload.count)]
    return done


class RowEmitter:
    """Streams a buffered row out on ``o`` one registered beat at a time.

    Call :meth:`prime` in the state before (it reads beat 0), then :meth:`emit` as the body of
    the output state: each time the held beat is free or taken, the next beat's ``values``
    (per-lane expressions of the read port's data) are registered and the next word is read. The
    read port is enabled only when the output advances, so its data stays aligned through any
    back-pressure. ``emit`` returns a signal that is high once the whole row has been taken.
    """

    def __init__(self, m: Module, o, read_port, ptr, beats, last_count, lanes: int):
        self.m, self.o, self.read_port = m, o, read_port
        self.ptr, self.beats, self.last_count, self.lanes = ptr, beats, last_count, lanes
        self.valid, self.last = Signal(name="out_valid"), Signal(name="out_last")
        self.count = Signal.like(o.payload.count, name="out_count")
        self.data = [Signal.like(o.payload.data[n], name=f"out_data{n}") for n in range(lanes)]
        m.d.comb += [o.valid.eq(self.valid), o.payload.last.eq(self.last),
                     o.payload.count.eq(self.count)]
        m.d.comb += [o.payload.data[n].eq(self.data[n]) for n in range(lanes)]

    def prime(self):
        m = self.m
        m.d.comb += self.read_port.en.eq(1)            # beat 0 appears next cycle
        m.d.sync += self.ptr.eq(1)

    def emit(self, values):
        m, ptr, done = self.m, self.ptr, Signal()
        with m.If(~self.valid | self.o.ready):
            m.d.comb += self.read_port.en.eq(1)
            with m.If(ptr <= self.beats):
                is_last = ptr == self.beats
                m.d.sync += [self.valid.eq(1), self.last.eq(is_last), ptr.eq(ptr + 1),
                             self.count.eq(Mux(is_last, self.last_count, self.lanes))]
                m.d.sync += [d.eq(v) for d, v in zip(self.data, values)]
            with m.Else():
                m.d.sync += [self.valid.eq(0), ptr.eq(0)]
                m.d.comb += done.eq(1)
        return done
