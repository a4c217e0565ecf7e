"""A pipeline between two streams, and the vector payload shared by the vector units.

:class:`Pipeline` owns the valid chain, the output queue and the input credit of a fixed-depth
datapath of free-running registers: ``stage(value)`` registers a value one step further,
``delay(value, n)`` carries it ``n`` steps, ``product(a, b)`` multiplies in a DSP block's own
registers. The datapath code then reads like the algorithm, and every unit stalls the same way.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory

from . import dsp

__all__ = ["Pipeline", "vector_layout", "count_shape", "wire", "register", "delay", "delay_line",
           "masked_max", "lane_mask", "tree_sum", "tree_levels", "split_product", "split_latency",
           "replicas", "replica", "result_queue", "queue_slices", "stepped", "KEEP_REPLICAS"]


def wire(m: Module, value, name: str):
    """``value`` as a named combinational signal. Chains that use their previous step more than
    once (running maxima, restoring division) must go through signals: Amaranth does not share
    common subexpressions, so an expression chain of n steps would grow as 2^n."""
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def register(m: Module, value, name: str):
    """``value`` one cycle later, in a free-running register (no enable: for datapaths that never
    stall)."""
    reg = Signal(value.shape(), name=name)
    m.d.sync += reg.eq(value)
    return reg


# yosys merges flip-flops with the same input into one; this keeps every ``*_replica*`` register
# (run after ``proc``, before synthesis: every flow that synthesises our Verilog runs it)
KEEP_REPLICAS = "proc; setattr -set keep 1 w:*_replica* %ci1:+$dff[Q] w:*_replica* %d"


def replicas(m: Module, value, n: int, name: str, *, reset_less: bool = True) -> list:
    """``n`` copies of ``value`` one cycle later, each its own register (kept apart through
    synthesis by :data:`KEEP_REPLICAS`): a value that drives hundreds of inputs gets a copy
    per group of them, so no single net has to reach across the whole unit."""
    copies = [Signal(value.shape(), name=f"{name}_replica{k}", reset_less=reset_less)
              for k in range(n)]
    m.d.sync += [c.eq(value) for c in copies]
    return copies


def replica(m: Module, value, name: str, *, reset_less: bool = True):
    """One :func:`replicas` copy: ``value`` a cycle later in a register kept through synthesis
    (a copy per consumer group of an equal value, one stage of a copied chain)."""
    return replicas(m, value, 1, name, reset_less=reset_less)[0]


def delay(m: Module, value, n: int, name: str):
    """``value`` ``n`` cycles later, through free-running registers (tags riding along a
    datapath that never stalls)."""
    for k in range(n):
        value = register(m, value, f"{name}{k}")
    return value


def delay_line(m: Module, value, n: int, name: str):
    """``value`` ``n`` cycles later, like :func:`delay`, but held in a LUT-RAM ring (a free-running
    write pointer and a read pointer ``n - 1`` behind it; the read registered) instead of ``n``
    flip-flops per bit: for values carried alongside a long datapath (a 31-stage divider)."""
    if n < 3:
        return delay(m, value, n, name)
    depth = 1 << (n - 1).bit_length()                # >= n: a slot lives until it is read
    ring = memory.Memory(shape=unsigned(len(value)), depth=depth, init=[])
    m.submodules[name] = ring
    w, r = ring.write_port(), ring.read_port(domain="comb")
    at = Signal(range(depth), name=f"{name}_w")
    back = Signal(range(depth), name=f"{name}_r", init=(1 - n) % depth)
    m.d.sync += [at.eq(at + 1), back.eq(back + 1)]
    m.d.comb += [w.addr.eq(at), w.data.eq(value), w.en.eq(1), r.addr.eq(back)]
    out = Signal(value.shape(), name=f"{name}_q")
    m.d.sync += out.eq(r.data)
    return out


def tree_levels(n: int) -> int:
    """Levels of a balanced binary tree over ``n`` leaves."""
    return max(0, (n - 1).bit_length())


def lane_mask(count, lanes: int):
    """Bit ``n`` set for the valid lanes ``n < count`` of a beat. Registered beside the data, a
    lane's bit gates its element alone (a ``count`` compared in every lane fanned out to every
    lane's gated register)."""
    return Cat(*(n < count for n in range(lanes)))


def masked_max(m: Module, start, values, live, name: str, stage=None):
    """Maximum of ``start`` and the ``values`` whose ``live`` bit is set, as a balanced tree of
    comparisons (depth :func:`tree_levels` of ``n + 1``; one signal per node). ``stage(value,
    name)``, when given, registers every level (a new maximum each cycle, that many cycles
    later)."""
    level = [start] + [Mux(live[n], v, start) for n, v in enumerate(values)]
    depth = 0
    while len(level) > 1:
        level = [wire(m, Mux(level[k + 1] > level[k], level[k + 1], level[k]),
                      f"{name}{depth}_{k // 2}") if k + 1 < len(level) else level[k]
                 for k in range(0, len(level), 2)]
        if stage is not None:
            level = [stage(v, f"{name}{depth}_{k}_q") for k, v in enumerate(level)]
        depth += 1
    return level[0]


def tree_sum(values, stage=None):
    """The sum of ``values`` as a balanced adder tree (depth :func:`tree_levels`, not ``n``).
    ``stage(value, name)``, when given, registers every level."""
    values = list(values)
    depth = 0
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
        if stage is not None:
            values = [stage(v, f"sum{depth}_{k}") for k, v in enumerate(values)]
        depth += 1
    return values[0]


def _chunks(v, width: int):
    """``v`` in ``width``-bit pieces, low first; the top piece of a signed value signed."""
    chunks = [v[k:k + width] for k in range(0, len(v), width)]
    if v.shape().signed:
        chunks[-1] = chunks[-1].as_signed()
    return chunks


def split_latency(a_bits: int, b_bits: int, width: int = dsp.PORT_BITS) -> int:
    """Cycles of :func:`split_product` for operands of these widths."""
    parts = -(-a_bits // width) * -(-b_bits // width)
    return dsp.LATENCY + 1 + tree_levels(parts)


def split_product(multiply, stage, a, b, name: str, width: int = dsp.PORT_BITS):
    """``a * b`` for operands wider than one DSP port: each is split into ``width``-bit pieces,
    every pair of pieces is one ``multiply(x, y, name)`` (a :func:`hw.dsp.product`: operands
    registered, then the product, one hardware multiplier with nothing else in its cycles), each
    partial product is registered, and the shifted partial products are summed by a tree
    registered at every level by ``stage(value, name)``: :func:`split_latency` cycles.

    The result has exactly ``len(a) + len(b)`` bits (signed if either operand is), and so does
    every sum on the way: the product fits, and a sum taken modulo ``2^width`` is exact in its
    low bits, so the shifted partial products' wider sums were carry chains of nothing (the
    8-lane requantiser's path: a 96-bit add whose value has at most 67 bits)."""
    bits = len(a) + len(b)
    is_signed = a.shape().signed or b.shape().signed

    def fit(v):
        return v[:bits].as_signed() if is_signed else v[:bits]

    # every partial product registered in the fabric before the adders: a multiplier's output
    # routed straight into a carry chain placed far from the DSP row was the Shiftmax's path
    parts = [fit(stage(multiply(x, y, f"{name}_pp{i}_{j}"), f"{name}_pp{i}_{j}_q")
                 << (width * (i + j)))
             for i, x in enumerate(_chunks(a, width)) for j, y in enumerate(_chunks(b, width))]
    return tree_sum(parts, stage=lambda v, level: stage(fit(v), f"{name}_{level}"))


def count_shape(lanes: int):
    return unsigned(max(1, lanes.bit_length()))


def vector_layout(width: int, lanes: int, *, is_signed: bool = True) -> data.StructLayout:
    """``lanes`` elements per beat; ``count`` = how many are valid (``lanes`` except possibly on a
    row's last beat, where the row length is not a multiple of ``lanes``); ``last`` ends a row."""
    elem = signed(width) if is_signed else unsigned(width)
    return data.StructLayout({"data": data.ArrayLayout(elem, lanes), "count": count_shape(lanes),
                              "last": 1})


QUEUE_SLICE_BITS = 64      # result bits per queue slice (its own write enable and pointers)
VALID_COPY_STAGES = 3      # the valid chain's last stages, one copy per queue slice


def result_queue(m: Module, name: str, data, writes_early, capacity: int, pops):
    """A first-in first-out queue of ``data`` in LUT-RAM that the caller keeps from overflowing
    (a credit count): ``data`` is written in the cycle after ``writes_early`` (one signal per
    slice, all equal at all times: the caller's copies), the head leaves on a pop. Returns
    ``(nonempty, head)``; ``head`` is read combinationally.

    The width is cut into :func:`queue_slices` slices of :data:`QUEUE_SLICE_BITS`, each with its
    own registered write enable and pointers (kept apart as replicas), so no enable or address
    has to reach every RAM cell of a wide unit's results. There is no full check: nothing in the
    write path but the registers. ``pops``: one pop signal per slice, all equal at all times
    (the caller's replicas); ``nonempty``: one register per slice, equal to ``level != 0`` at all
    times, each updated from its own slice's write and pop and one shared flag, ``level == 1``:

    - a write without a pop leaves the queue nonempty; a pop without a write empties it exactly
      when the level was 1; otherwise the flag stays.

    (The level's zero test in front of the pop was the LayerNorm's path; then the level's add →
    its zero test → every slice's flag copy, across slices, the requantiser's; then the pop →
    the level's add → its test for 1, LayerNorm's: the test is now :func:`stepped`.)"""
    size = 1 << max(1, (capacity - 1).bit_length())
    slices = queue_slices(len(data))
    assert len(writes_early) == slices
    writes = [replica(m, early, f"{name}_write{k}", reset_less=False)
              for k, early in enumerate(writes_early)]
    level = Signal(range(size + 1), name=f"{name}_level")
    single = Signal(name=f"{name}_single")                      # level == 1
    m.d.sync += [level.eq(level + writes[0] - pops[0]),
                 single.eq(stepped(level, writes[0], pops[0], lambda v: v == 1))]
    nonempty = [Signal(name=f"{name}_nonempty_replica{k}") for k in range(slices)]
    for k, flag in enumerate(nonempty):
        m.d.sync += flag.eq(writes[k] | (flag & ~(pops[k] & single)))
    heads = []
    for k in range(slices):
        piece = data[k * QUEUE_SLICE_BITS:(k + 1) * QUEUE_SLICE_BITS]
        m.submodules[f"{name}{k}"] = ram = memory.Memory(shape=unsigned(len(piece)),
                                                         depth=size, init=[])
        w, r = ram.write_port(), ram.read_port(domain="comb")
        at = Signal(range(size), name=f"{name}_w_replica{k}")
        head_at = Signal(range(size), name=f"{name}_r_replica{k}")
        m.d.sync += [at.eq(at + writes[k]), head_at.eq(head_at + pops[k])]
        m.d.comb += [w.addr.eq(at), w.en.eq(writes[k]), w.data.eq(piece), r.addr.eq(head_at)]
        heads.append(r.data)
    return nonempty, Cat(*heads)


def stepped(value, up, down, test):
    """``test(value + up - down)`` for one-bit ``up`` and ``down``, with no add in front of the
    test: the tests of ``value + 1``, ``value - 1`` and ``value`` itself, chosen by ``up`` and
    ``down``. A late ``down`` (a queue's pop) then passes one multiplexer, not a carry chain
    and a compare after it."""
    return Mux(up & ~down, test(value + 1), Mux(down & ~up, test(value - 1), test(value)))


def queue_slices(width: int) -> int:
    """Slices of :data:`QUEUE_SLICE_BITS` a ``width``-bit result queue is cut into."""
    return -(-width // QUEUE_SLICE_BITS)


class Pipeline:
    """A datapath of free-running registers between stream ``i`` (input) and ``o`` (output).

    No register has an enable: a stall cannot freeze the datapath, so no single signal fans out
    to every flip-flop of a wide unit (the path that limited the clock once the datapath itself
    was pipelined). Results wait in an output queue (:func:`result_queue`), and ``i`` is
    accepted only while every element in flight still has a place in it (a credit count).
    Describe the datapath with :meth:`stage` / :meth:`delay` / :meth:`product` from ``i.payload``
    to :meth:`result`, then call :meth:`connect` with its depth in stages: it drives ``i.ready``,
    ``o`` and the valid chain.
    """

    def __init__(self, m: Module, name: str = "p", platform=None):
        self.m, self.name, self.platform = m, name, platform
        self._n = 0
        self._result = None

    def stage(self, value, name: str | None = None):
        self._n += 1
        return register(self.m, value, name or f"{self.name}_r{self._n}")

    def product(self, a, b, name: str | None = None):
        """``a * b`` after ``dsp.LATENCY`` steps (operands, then product; on ECP5 inside one
        MULT18X18D)."""
        self._n += 1
        return dsp.product(self.m, self.platform, a, b, name or f"{self.name}_m{self._n}")

    def delay(self, value, n: int, name: str | None = None):
        for k in range(n):
            value = self.stage(value, f"{name}_d{k}" if name else None)
        return value

    def result(self, o):
        """The signal the datapath's last stage drives: ``o``'s payload before the queue."""
        if self._result is None:
            self._result = Signal(o.payload.shape(), name=f"{self.name}_result")
        return self._result

    # cycles from the datapath's last stage to ``o``: the queue's write, the output register
    OUTPUT_LATENCY = 2

    @staticmethod
    def buffer_depth(depth: int) -> int:
        """Output queue entries for a ``depth``-stage datapath: every element in flight, the
        queue's and the output register's cycles and the credit's return, so that a ready output
        never makes the input wait."""
        return depth + Pipeline.OUTPUT_LATENCY + 2

    def connect(self, i, o, depth: int, lead: int = 0) -> None:
        """Every result enters the output queue (:func:`result_queue`: its write enables are
        registers, with nothing in between; a bypass decided from a FIFO's level, and then the
        FIFO's own full check, were the GELU's longest paths), and ``o`` is a register that
        takes the queue's oldest entry. With ``o`` always ready every result leaves ``depth +
        OUTPUT_LATENCY`` cycles after its input, as from a pipeline that never stalls (the drain
        relies on it for the requantiser).

        ``o.ready`` reaches only the output register's enable: the queue pops whenever a
        one-entry skid register behind ``o`` is empty (a registered flag), and the head popped
        while ``o`` waits goes there (``o.ready`` → pop → the queue's level and pointers was the
        LayerNorm's longest path). The input credit comes back on the pop, not on ``o``'s
        handshake.

        ``lead``: ``i`` comes from a free-running source whose ``ready`` lets it start an
        element that arrives ``lead`` cycles later and is then always taken (a
        :class:`~hw.rowbuffer.RowReplay`); the credit keeps room for those in flight."""
        m = self.m
        capacity = self.buffer_depth(depth + lead)
        accept = i.valid if lead else i.valid & i.ready
        # one pop per slice of the queue (equal at all times), each from that slice's copies of
        # the queue's nonempty flag and the skid register's
        out, width = o.payload.as_value(), len(o.payload.as_value())
        pops = [Signal(name=f"{self.name}_pop{k}") for k in range(queue_slices(width))]
        held = Signal(range(capacity + 1), name=f"{self.name}_held")   # accepted, not popped
        # ``i.ready`` is ``held < capacity - lead``, kept in a register computed from ``held``'s
        # next value (the compare on ``held`` → a row replay's issue → its address register
        # enables was the LayerNorm's longest path), by :func:`stepped`: no add after the pop
        ready = Signal(init=int(capacity > lead), name=f"{self.name}_in_ready")
        m.d.sync += [held.eq(held + accept - pops[0]),
                     ready.eq(stepped(held, accept, pops[0], lambda v: v < capacity - lead))]
        m.d.comb += i.ready.eq(ready)
        # the valid chain shared, then its last VALID_COPY_STAGES stages one copy per slice
        # (each kept apart as a replica): one chain's last register driving every slice's write
        # enable copy, and so its pointer and LUT-RAM cells, was LayerNorm's path (7.9 ns of
        # routing from a slice's enable to its write pointer)
        copied = min(VALID_COPY_STAGES, depth - 1)
        shared = delay(m, accept, depth - 1 - copied, f"{self.name}_valid")
        writes_early = [shared] * len(pops)
        for n in range(copied):
            writes_early = [replica(m, w, f"{self.name}_valid{n}_{k}", reset_less=False)
                            for k, w in enumerate(writes_early)]
        nonempty, head = result_queue(m, f"{self.name}_queue", self.result(o).as_value(),
                                      writes_early, capacity, pops)
        skid_valid = Signal(name=f"{self.name}_skid_valid")
        # the output and skid registers in the queue's slices, each slice with its own copies of
        # ``o.valid`` and the skid's flag (equal to them at all times): one output-register
        # enable reaching every bit of a wide result (LayerNorm's 512) was 8.6 ns of routing
        for k, pop in enumerate(pops):              # slice k
            at = slice(k * QUEUE_SLICE_BITS, min(width, (k + 1) * QUEUE_SLICE_BITS))
            valid = o.valid if k == 0 else Signal(name=f"{self.name}_out_valid_replica{k}")
            full = skid_valid if k == 0 else Signal(name=f"{self.name}_skid_valid_replica{k}")
            skid = Signal(at.stop - at.start, name=f"{self.name}_skid{k}")
            load = Signal(name=f"{self.name}_load{k}")          # the output register is free
            m.d.comb += pop.eq(nonempty[k] & ~full)
            m.d.comb += load.eq(~valid | o.ready)
            with m.If(~full):
                m.d.sync += skid.eq(head[at])        # kept only if ``o`` does not take it
            m.d.sync += full.eq(Mux(full, ~o.ready, pop & ~load))
            with m.If(load):
                m.d.sync += [valid.eq(full | pop), out[at].eq(Mux(full, skid, head[at]))]
