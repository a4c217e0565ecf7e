"""The scratchpad's storage: ``depth`` words of ``lanes`` elements, one write port with an enable
per element, and read ports that each return a word a fixed number of cycles after its address.

A *direct* read port (latency 1) is a synchronous read of the address it is given. A
*registered* read port (latency 2, :data:`REGISTERED`) registers the address first, one copy per
element, and each element's storage reads from its own copy. The storage is one memory per
element (so per element and read port its own block RAMs after synthesis), which is what lets
every copy sit beside the blocks it addresses: one address net reaching all of a read port's
block RAMs across the chip was the 8x8 board build's critical path (transposer B's address adder
→ 9.1 ns of routing to a far DP16KD). Readers know their port's latency
(:class:`hw.feeder.Transposer`, :class:`hw.feeder.WordReader`, :class:`hw.hostif.HostInterface`
take it as ``read_latency``).

The write is registered too, per element (:data:`WRITE_DELAY`): the one write address net that
reached every element's block RAMs was the 8x8 board build's next path (11.3 ns of routing from
the host write's address register to a far DP16KD).
"""
from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .isa import ELEM_BITS
from .pipeline import register, replicas

__all__ = ["DIRECT", "REGISTERED", "WRITE_DELAY", "ScratchpadMemory"]

DIRECT, REGISTERED = 1, 2
WRITE_DELAY = 1         # cycles a write waits in its per-element registers before it is stored


class ScratchpadMemory(wiring.Component):
    """``write``: ``addr``, ``data``, ``en`` (one bit per element), stored at the clock edge
    :data:`WRITE_DELAY` cycles later; ``read[n]``: ``data`` is the word at ``addr``
    ``latencies[n]`` cycles later, with every write stored at an earlier edge than the read's
    (a write stored at the read's own edge leaves it undefined, as on a block RAM). A read port
    reads at the edge ``latencies[n] - 1`` cycles after its address is given; a write given
    ``WRITE_DELAY + 1`` or more cycles before a direct read's address is always seen."""

    def __init__(self, lanes: int, depth: int, latencies: tuple[int, ...]):
        if any(lat not in (DIRECT, REGISTERED) for lat in latencies):
            raise ValueError(f"ScratchpadMemory: read latencies must be {DIRECT} or "
                             f"{REGISTERED}, not {latencies}")
        self.lanes, self.depth, self.latencies = lanes, depth, tuple(latencies)
        abits = max(1, (depth - 1).bit_length())
        word = data.ArrayLayout(signed(ELEM_BITS), lanes)
        read = wiring.Signature({"addr": Out(abits), "data": In(word)})
        super().__init__({
            "write": In(wiring.Signature({"addr": Out(abits), "data": Out(word),
                                          "en": Out(lanes)})),
            "read": In(read).array(len(latencies)),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.lanes
        # per read port, the address each element's storage reads from
        addrs = [replicas(m, port.addr, V, f"read{n}_addr") if lat == REGISTERED
                 else [port.addr] * V
                 for n, (port, lat) in enumerate(zip(self.read, self.latencies))]
        # the write's address copied per element, its data and enable registered beside it
        write_addrs = replicas(m, self.write.addr, V, "write_addr")
        write_data = register(m, self.write.data.as_value(), "write_data")
        write_en = register(m, self.write.en, "write_en")
        for e in range(V):
            mem = memory.Memory(shape=signed(ELEM_BITS), depth=self.depth, init=[])
            m.submodules[f"element{e}"] = mem
            w = mem.write_port()
            m.d.comb += [w.addr.eq(write_addrs[e]),
                         w.data.eq(write_data[e * ELEM_BITS:(e + 1) * ELEM_BITS]),
                         w.en.eq(write_en[e])]
            for n, port in enumerate(self.read):
                r = mem.read_port()
                m.d.comb += [r.addr.eq(addrs[n][e]), port.data[e].eq(r.data)]
        return m
