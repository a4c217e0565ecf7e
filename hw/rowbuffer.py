"""The row pipeline shared by the row units (Shiftmax, ShiftGELU, LayerNorm).

A row arrives as beats (``count`` valid lanes, ``last`` on the final one) and is stored in a ring
of ``slots`` row buffers of ``depth`` beats each, so that while one row is being loaded, the
rows before it are at their per-row work (reciprocal, root) and the oldest is being replayed
through the output arithmetic: with enough slots (:func:`ring_slots`), the per-row work hides
behind the rows and a unit streams one beat per cycle.

- :class:`RowLoader` writes beats into the next free slot and offers each accepted beat, one cycle
  later, to the unit's row statistics (maximum, sums).
- Each row then travels as a *descriptor* (its slot's first word, its beats, its last beat's
  count, and the values the unit has computed for it) through per-row stages
  (:func:`row_stage`, :func:`call`), in row order.
- :class:`RowReplay` turns descriptors back into a stream of the buffered beats, back to back
  across rows, each beat with its row's descriptor.

Rows longer than a slot set the unit's sticky ``error`` and their excess beats are dropped, so a
bad row can never overrun the memory or hang the unit.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream

from . import bram
from .pipeline import count_shape, delay, lane_mask, masked_max, register, stepped, tree_levels
from .rowparallel import round_robin

__all__ = ["ring_slots", "row_layout", "describe", "stream_fifo", "finished_rows", "RowLoader",
           "RowReplay", "loaded_with_max", "row_stage", "stage_copies", "call"]


def ring_slots(latency: int, depth: int) -> int:
    """Slots a ring of ``depth``-beat rows needs to stream at one beat per cycle when a row spends
    ``latency`` cycles between its last beat loaded and its first beat replayed: the row being
    loaded, the one being replayed, the rows in between, and one for the handshakes."""
    return 3 + math.ceil(latency / depth)


def row_layout(depth: int, slots: int, lanes: int, **fields) -> data.StructLayout:
    """A row descriptor: ``base`` (the slot's first word), ``beats``, ``last_count`` (valid lanes
    of the last beat) and the unit's per-row ``fields`` (name: shape)."""
    return data.StructLayout({"base": unsigned(max(1, (depth * slots - 1).bit_length())),
                              "beats": unsigned((depth).bit_length()),
                              "last_count": count_shape(lanes), **fields})


def describe(payload, row, **values) -> list:
    """Assignments filling descriptor ``payload``: the framing of descriptor ``row`` (``base``,
    ``beats``, ``last_count``) and the unit's ``values``."""
    return [*(payload[f].eq(row[f]) for f in ("base", "beats", "last_count")),
            *(payload[k].eq(v) for k, v in values.items())]


def stream_fifo(m: Module, layout, depth: int, name: str, *, buffered: bool = True):
    """A FIFO of stream payloads (row descriptors, beats); returns ``(write stream, read
    stream)`` with ``layout`` payloads.
    ``buffered``: the head in a register (else read from the LUT-RAM, one register fewer on the
    read enable)."""
    f = (fifo.SyncFIFOBuffered if buffered else fifo.SyncFIFO)(width=layout.size, depth=depth)
    m.submodules[name] = f
    w, r = stream.Signature(layout).flip().create(), stream.Signature(layout).create()
    m.d.comb += [f.w_data.eq(w.payload.as_value()), f.w_en.eq(w.valid), w.ready.eq(f.w_rdy),
                 r.payload.eq(f.r_data), r.valid.eq(f.r_rdy), f.r_en.eq(r.ready)]
    return w, r


def finished_rows(m: Module, layout, slots: int, tag, name: str, **totals):
    """The stream of loaded rows' descriptors: ``tag`` (a beat of :attr:`RowLoader.beat`, delayed
    to where the unit's running ``totals`` take it) gives the framing, and each row's descriptor
    is written a cycle after its last beat, with ``totals`` (name: register) as they hold then:
    the register of each running total, not its next value (a running sum's carry chain into the
    descriptor FIFO's LUT RAM was the 16-lane LayerNorm's path). One entry per slot: the writer
    never waits."""
    w, r = stream_fifo(m, layout, slots, name)
    ended = register(m, tag.valid & tag.last, f"{name}_ended")
    row = register(m, tag.row, f"{name}_row")
    m.d.comb += [w.valid.eq(ended), *describe(w.payload, row, **totals)]
    return r


class RowLoader:
    """Stores the beats of ``i`` into ring slots (``write_port`` addresses ``depth * slots``
    words; each beat's write is given a cycle after the beat is accepted) and counts the slots
    in use: a row takes the next slot when its first beat arrives
    and gives it back when the unit pulses ``release`` (its last replay read, usually
    :attr:`RowReplay.done`); ``i`` waits while all ``slots`` are taken.

    ``beat`` is each accepted beat one cycle later (``valid``, ``first``, ``last``, ``count``,
    ``data``) with ``row``, its row's descriptor so far (``beats`` is final on the last beat)."""

    def __init__(self, m: Module, i, write_port, depth: int, slots: int, lanes: int, error,
                 name: str = "load"):
        self.layout = row_layout(depth, slots, lanes)
        base = Signal(self.layout["base"].shape, name=f"{name}_base")
        addr = Signal.like(base, name=f"{name}_addr")
        ptr = Signal(range(depth + 1), name=f"{name}_ptr")
        used = Signal(range(slots + 1), name=f"{name}_used")
        self.release = Signal(name=f"{name}_release")
        accept = Signal(name=f"{name}_accept")
        # ``used < slots`` kept in a register, and the write registered before the memory's own
        # registers: the compare → the accept → the write enable's copies beside the 15 block
        # RAMs was the 16-lane LayerNorm's path (6.3 ns of routing)
        room = Signal(init=1, name=f"{name}_room")
        m.d.comb += [i.ready.eq(room), accept.eq(i.valid & room)]
        m.d.sync += [write_port.addr.eq(addr), write_port.data.eq(i.payload.data.as_value()),
                     write_port.en.eq(accept & (ptr < depth))]
        next_base = Mux(base == depth * (slots - 1), 0, base + depth)
        row_ends = accept & i.payload.last
        m.d.sync += [used.eq(used + row_ends - self.release),
                     room.eq(stepped(used, row_ends, self.release, lambda v: v < slots))]
        with m.If(accept):
            with m.If(ptr < depth):
                m.d.sync += [ptr.eq(ptr + 1), addr.eq(addr + 1)]
            with m.Else():
                m.d.sync += error.eq(1)
            with m.If(i.payload.last):
                m.d.sync += [ptr.eq(0), base.eq(next_base), addr.eq(next_base)]

        self.beat = Signal(data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "count": i.payload.count.shape(), "live": lanes,
            "data": i.payload.data.shape(), "row": self.layout}), name=f"{name}_beat")
        b = self.beat
        m.d.sync += [b.valid.eq(accept), b.first.eq(ptr == 0), b.last.eq(i.payload.last),
                     b.count.eq(i.payload.count), b.live.eq(lane_mask(i.payload.count, lanes)),
                     b.data.eq(i.payload.data),
                     b.row.base.eq(base), b.row.beats.eq(Mux(ptr < depth, ptr + 1, ptr)),
                     b.row.last_count.eq(i.payload.count)]


def loaded_with_max(m: Module, load: RowLoader, width: int, depth: int, slots: int,
                    lanes: int):
    """The loaded rows' descriptors with their maximum ``max`` (signed ``width``), as a stream:
    each beat's maximum is a tree registered at every level, folded into the row's after it."""
    lowest = Const(-(1 << (width - 1)), signed(width))
    beat = load.beat
    beat_max = masked_max(m, lowest, [beat.data[n] for n in range(lanes)], beat.live,
                          "beat_max", stage=lambda v, name: register(m, v, name))
    tag = delay(m, beat, tree_levels(lanes + 1), "max_tag")
    row_max = Signal(signed(width))
    with m.If(tag.valid):
        m.d.sync += row_max.eq(Mux(tag.first | (beat_max > row_max), beat_max, row_max))
    return finished_rows(m, row_layout(depth, slots, lanes, max=signed(width)), slots, tag,
                         "loaded", max=row_max)


class RowReplay:
    """Replays buffered rows as the stream ``o`` (payload ``data``: the buffer word, ``count``,
    ``last``, ``index``: the beat's place in its row, ``row``: its descriptor): takes descriptors
    from ``rows`` and reads their beats from ``read_port`` (the ``read`` side of a
    :class:`hw.bram.RegisteredReadMemory`) back to back, the next row's first read the cycle
    after the previous row's last. Free-running stages (the memory's: the address copies, the
    synchronous read, its word registered inside the block RAM on ECP5, so no block-RAM output
    drives arithmetic or routing): ``o.ready`` is the consumer's permission to *issue* a read,
    and the beat arrives :data:`LATENCY` cycles later, when it must be taken (a
    :class:`~hw.pipeline.Pipeline` connected with ``lead=LATENCY`` does both). ``done`` pulses
    when the block RAM reads a row's last word: its slot may be written from the next cycle
    on."""

    LATENCY = bram.LATENCY

    def __init__(self, m: Module, read_port, rows, lanes: int, name: str = "replay"):
        row_shape = rows.payload.shape()
        layout = data.StructLayout({"data": read_port.data.shape(), "count": count_shape(lanes),
                                    "last": 1, "index": row_shape["beats"].shape,
                                    "row": row_shape})
        self.o = stream.Signature(layout).create()
        # descriptors through a two-entry FIFO: a stage's result (or the collect multiplexer of
        # its copies) never drives the wide descriptor register's enable. Its head is read from
        # the LUT-RAM: a head register loaded on the same enable as ``cur`` doubled that
        # enable's fan-out, the Shiftmax's longest path
        queued_w, rows_in = stream_fifo(m, row_shape, 2, f"{name}_rows", buffered=False)
        m.d.comb += [queued_w.payload.eq(rows.payload), queued_w.valid.eq(rows.valid),
                     rows.ready.eq(queued_w.ready)]
        rows = rows_in
        cur = Signal(row_shape, name=f"{name}_row")
        busy = Signal(name=f"{name}_busy")
        ptr = Signal(row_shape["beats"].shape, name=f"{name}_ptr")
        addr = Signal(row_shape["base"].shape, name=f"{name}_addr")
        issue = Signal(name=f"{name}_issue")
        self.done = Signal(name=f"{name}_done")
        # ptr == beats - 1, kept in a register a step ahead (a compare there was the path into
        # the wide descriptor register's enable)
        is_last = Signal(name=f"{name}_is_last")
        m.d.comb += [issue.eq(self.o.ready & busy),
                     rows.ready.eq(~busy | (self.o.ready & is_last)),

                     read_port.addr.eq(addr)]
        # the slot is free once its last word has been read: LATENCY - 2 cycles after the issue
        # (the address register, then the read), so the next write never meets the read
        m.d.comb += self.done.eq(delay(m, issue & is_last, self.LATENCY - 2, f"{name}_done"))
        with m.If(issue):
            m.d.sync += [ptr.eq(ptr + 1), addr.eq(addr + 1), is_last.eq(ptr + 2 == cur.beats)]
            with m.If(is_last):
                m.d.sync += busy.eq(0)
        with m.If(rows.valid & rows.ready):
            m.d.sync += [cur.eq(rows.payload), busy.eq(1), ptr.eq(0),
                         addr.eq(rows.payload.base), is_last.eq(rows.payload.beats == 1)]

        # the framing registered beside the read (address, block RAM, word: LATENCY stages)
        framing = [(issue, "valid"), (is_last, "last"),
                   (Mux(is_last, cur.last_count, lanes), "count"), (ptr, "index"), (cur, "row")]
        valid, last, count, index, row = (delay(m, v, self.LATENCY, f"{name}_{label}")
                                          for v, label in framing)
        o = self.o
        m.d.comb += [o.valid.eq(valid), o.payload.last.eq(last), o.payload.count.eq(count),
                     o.payload.index.eq(index), o.payload.row.eq(row),
                     o.payload.data.eq(read_port.data)]


@contextmanager
def row_stage(m: Module, name: str, i, o):
    """A per-row step between descriptor streams ``i`` and ``o``, as an FSM: ``IDLE`` takes a
    descriptor into the register this yields; the caller then adds its states, starting at
    ``"RUN"`` and ending with ``m.next = "OUT"``; ``OUT`` offers ``o`` (the caller drives its
    payload from the held descriptor and its own result registers) until it is taken.

    ``i.ready`` is a flag register equal to "in ``IDLE``" (not a decode of the state register):
    the decode reaching the FIFO in front, and that FIFO's output register enable, was the
    16-lane LayerNorm's path. The descriptor register follows ``i`` while idle (its enable is
    that flag, not ``i.valid``: the stage before's valid through the deal to the register's
    enables was the ``ivit`` LayerNorm's path, 10.6 ns of routing)."""
    held = Signal(i.payload.shape(), name=f"{name}_row")
    idle = Signal(init=1, name=f"{name}_idle")
    m.d.comb += i.ready.eq(idle)
    with m.If(idle):
        m.d.sync += held.eq(i.payload)
    with m.FSM(name=name):
        with m.State("IDLE"):
            with m.If(i.valid):
                m.d.sync += idle.eq(0)
                m.next = "RUN"
        yield held
        with m.State("OUT"):
            m.d.comb += o.valid.eq(1)
            with m.If(o.ready):
                m.d.sync += idle.eq(1)
                m.next = "IDLE"


def stage_copies(m: Module, name: str, i, o, copies: int, build) -> None:
    """``copies`` of a per-row stage side by side, for stages slower than a row: descriptors from
    ``i`` are dealt to them in turn and collected onto ``o`` in row order. ``build(name, i, o)``
    describes one copy (its own engine and result registers). With copies, ``o`` is a register
    stage after the collect that takes a descriptor only while empty (at most one every two
    cycles, far above a row's rate through the copies' engines), so ``o.ready`` reaches only
    its valid flag: the next stage's ready through its deal reaching the register's ~100
    enables was the ``ivit`` LayerNorm's path (6.0 ns of routing)."""
    if copies == 1:
        build(name, i, o)
        return
    ins = [stream.Signature(i.payload.shape()).create() for _ in range(copies)]
    outs = [stream.Signature(o.payload.shape()).create() for _ in range(copies)]
    for k in range(copies):
        build(f"{name}{k}", ins[k], outs[k])
    # collected into a register stage: the collect multiplexer driving the next FIFO's write
    # enable (fanning out to its LUT-RAM) was the Shiftmax's longest path
    collected = stream.Signature(o.payload.shape()).create()
    round_robin(m, i, collected, ins, outs, name=name)
    m.d.comb += collected.ready.eq(~o.valid)
    with m.If(~o.valid):
        m.d.sync += [o.valid.eq(collected.valid), o.payload.eq(collected.payload)]
    with m.Elif(o.ready):
        m.d.sync += o.valid.eq(0)


def call(m: Module, engine, state: str, on_result, then: str) -> None:
    """Two FSM states: ``state`` starts a sequential engine (divider, root), ``state + "_Q"``
    waits for its result and applies ``on_result(result)`` (sync assignments), then goes to
    ``then``.

    The engine's operands (``engine.i.payload``) are the caller's to drive, outside the FSM, from
    the held descriptor: the engines track their operands while idle and keep them from the
    cycle they start. Operands driven only in ``state`` were a decode of the FSM's state in
    front of every operand register bit (the ``ivit`` LayerNorm's path, 7.4 ns of routing)."""
    with m.State(state):
        m.d.comb += engine.i.valid.eq(1)
        with m.If(engine.i.ready):
            m.next = state + "_Q"
    with m.State(state + "_Q"):
        m.d.comb += engine.o.ready.eq(1)
        with m.If(engine.o.valid):
            m.d.sync += on_result(engine.o.payload)
            m.next = then
