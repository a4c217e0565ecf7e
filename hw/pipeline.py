"""A stallable pipeline between two streams, and the vector payload shared by the vector units.

:class:`Pipeline` owns the valid chain and the one enable (``~o.valid | o.ready``) of a fixed-depth
datapath: ``stage(value)`` registers a value one step further, ``delay(value, n)`` carries it ``n``
steps. The datapath code then reads like the algorithm, and every unit stalls the same way.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data

__all__ = ["Pipeline", "vector_layout", "count_shape", "wire", "register", "delay", "masked_max",
           "tree_sum", "tree_levels", "split_product"]


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


def delay(m: Module, value, n: int, name: str):
    """``value`` ``n`` cycles later, through free-running registers (tags riding along a
    datapath that never stalls)."""
    for k in range(n):
        value = register(m, value, f"{name}{k}")
    return value


def tree_levels(n: int) -> int:
    """Levels of a balanced binary tree over ``n`` leaves."""
    return max(0, (n - 1).bit_length())


def masked_max(m: Module, start, values, count, name: str, stage=None):
    """Maximum of ``start`` and the first ``count`` of ``values``, as a balanced tree of
    comparisons (depth :func:`tree_levels` of ``n + 1``; one signal per node). ``stage(value,
    name)``, when given, registers every level (a new maximum each cycle, that many cycles
    later)."""
    level = [start] + [Mux(n < count, v, start) for n, v in enumerate(values)]
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


def split_product(stage, a, b, name: str, width: int = 18):
    """``a * b`` in two registered steps, for a ``b`` wider than one DSP port: the partial products
    ``a * b[k*width : (k+1)*width]`` (one hardware multiplier each, nothing after it in the
    cycle), then their shifted sum. ``stage(value, name)`` registers a value (a ``Pipeline``'s or a
    free-running one)."""
    chunks = [b[k:k + width] for k in range(0, len(b), width)]
    if b.shape().signed:
        chunks[-1] = chunks[-1].as_signed()
    parts = [stage(a * c, f"{name}_pp{k}") for k, c in enumerate(chunks)]
    return stage(tree_sum(part << (k * width) for k, part in enumerate(parts)), name)


def count_shape(lanes: int):
    return unsigned(max(1, lanes.bit_length()))


def vector_layout(width: int, lanes: int, *, is_signed: bool = True) -> data.StructLayout:
    """``lanes`` elements per beat; ``count`` = how many are valid (``lanes`` except possibly on a
    row's last beat, where the row length is not a multiple of ``lanes``); ``last`` ends a row."""
    elem = signed(width) if is_signed else unsigned(width)
    return data.StructLayout({"data": data.ArrayLayout(elem, lanes), "count": count_shape(lanes),
                              "last": 1})


class Pipeline:
    """Registers with one shared enable between stream ``i`` (input) and ``o`` (output).

    Call :meth:`connect` once the datapath is described with ``depth`` stages: it drives
    ``i.ready``, ``o.valid`` and the valid chain.
    """

    def __init__(self, m: Module, name: str = "p"):
        self.m, self.name = m, name
        self.en = Signal(name=f"{name}_en")
        self._n = 0

    def stage(self, value, name: str | None = None):
        self._n += 1
        reg = Signal(value.shape(), name=name or f"{self.name}_r{self._n}")
        with self.m.If(self.en):
            self.m.d.sync += reg.eq(value)
        return reg

    def delay(self, value, n: int, name: str | None = None):
        for k in range(n):
            value = self.stage(value, f"{name}_d{k}" if name else None)
        return value

    def connect(self, i, o, depth: int) -> None:
        m = self.m
        valid = [Signal(name=f"{self.name}_valid{s}") for s in range(depth)]
        m.d.comb += [self.en.eq(~o.valid | o.ready), i.ready.eq(self.en),
                     o.valid.eq(valid[-1] if depth else i.valid)]
        with m.If(self.en):
            m.d.sync += valid[0].eq(i.valid)
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, depth)]
