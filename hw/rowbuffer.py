"""Row loading and replay shared by the row units (Shiftmax, ShiftGELU, LayerNorm).

A row arrives as beats (``count`` valid lanes, ``last`` on the final one) and is written into a
one-beat-per-word buffer. Rows longer than the buffer set the unit's sticky ``error`` and their
excess beats are dropped, so a bad row can never overrun the memory or hang the unit.
:class:`RowEmitter` replays a buffered row through the unit's output arithmetic as a stallable
pipeline.
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
    """Replays a buffered row on ``o`` through a stallable pipeline: the buffer's synchronous
    read is stage 1, its word registered stage 2 (no block-RAM output drives arithmetic), then
    one registered stage per function of ``steps`` (each maps the list of per-lane values to the
    next; the first gets the registered word). Every stage, the read port and
    the framing (``last``, ``count``) advance on one enable, ``~o.valid | o.ready``, so the
    output holds through any back-pressure and a full row streams at one beat per cycle.

    The caller addresses the read port with ``ptr`` (zero when the output state is entered) and
    calls :meth:`run` as the body of that state; :meth:`run` returns a signal that is high when
    the row's last beat is taken (``ptr`` is then cleared)."""

    def __init__(self, m: Module, o, read_port, ptr, beats, last_count, lanes: int, steps,
                 name: str = "out"):
        self.m, self.o, self.read_port, self.ptr, self.beats = m, o, read_port, ptr, beats
        self.en, self.go = Signal(name=f"{name}_en"), Signal(name=f"{name}_go")
        issue = Signal(name=f"{name}_issue")
        m.d.comb += [self.en.eq(~o.valid | o.ready),
                     issue.eq(self.go & self.en & (ptr < beats))]
        is_last = ptr == beats - 1
        framing = [(issue, Mux(is_last, last_count, lanes), is_last)]     # valid, count, last
        values = self._reg(read_port.data, f"{name}_word")
        for k, step in enumerate(steps):
            values = [self._reg(v, f"{name}_s{k}_{n}") for n, v in enumerate(step(values))]
        for k in range(len(steps) + 2):                 # the read, its register, each step
            framing.append(tuple(self._reg(v, f"{name}_{f}{k}")
                                 for v, f in zip(framing[-1], ("valid", "count", "last"))))
        valid, count, last = framing[-1]
        m.d.comb += [o.valid.eq(valid), o.payload.count.eq(count), o.payload.last.eq(last)]
        m.d.comb += [o.payload.data[n].eq(v) for n, v in enumerate(values)]
        with m.If(issue):
            m.d.sync += ptr.eq(ptr + 1)

    def _reg(self, value, name):
        r = Signal(value.shape(), name=name)
        with self.m.If(self.en):
            self.m.d.sync += r.eq(value)
        return r

    def run(self):
        m, done = self.m, Signal()
        m.d.comb += [self.go.eq(1), self.read_port.en.eq(self.en)]
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.comb += done.eq(1)
            m.d.sync += self.ptr.eq(0)
        return done
