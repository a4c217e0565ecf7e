"""cocotb drivers for Amaranth ``stream.Signature`` ports (``<name>__valid/ready/payload``).

The shape of cocotbext-axi's AXI-stream classes, for cocotb 2.x: a :class:`StreamSource` with
``send``/``idle``, a :class:`StreamSink` with ``recv``, both with an optional pause generator for
random stalls. Payloads are packed and unpacked with the component's own ``data.Layout``, so no
bit offset is written here.
"""
from __future__ import annotations

import random
from collections import deque

import cocotb
from amaranth.lib import data
from cocotb.triggers import Event, FallingEdge, ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "random_pauses", "TB"]


def random_pauses(probability: float, seed: int):
    """Pause generator: True (stall this cycle) with the given probability."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


def _pack(layout, value) -> int:
    if isinstance(value, int):
        return value
    return layout.const(value).as_bits()


class StreamSource:
    """Drives ``<name>__valid`` / ``<name>__payload``, honouring ``<name>__ready``.

    Signals are driven at the falling clock edge and the handshake is sampled in the ReadOnly
    phase after it, so the transfer decided there is the one the design sees at the next rising
    edge, whatever the simulator's event order at the edge itself.
    """

    def __init__(self, dut, name: str, clock, layout, pause=None):
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._payload = getattr(dut, f"{name}__payload")
        self._clock, self._layout, self._pause = clock, layout, pause
        self._queue: deque = deque()
        self._done = Event()
        self._done.set()
        self._valid.value = 0
        self.sent = 0
        cocotb.start_soon(self._run())

    def send_nowait(self, payload) -> None:
        self._queue.append(_pack(self._layout, payload))
        self._done.clear()

    async def send(self, payload) -> None:
        self.send_nowait(payload)

    def idle(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> None:
        await self._done.wait()

    async def _run(self):
        valid = taken = False
        while True:
            await FallingEdge(self._clock)
            if not valid or taken:
                valid = bool(self._queue) and not (self._pause and next(self._pause))
                if valid:
                    self._payload.value = self._queue.popleft()
                elif not self._queue:
                    self._done.set()
                self._valid.value = int(valid)
            await ReadOnly()
            taken = valid and bool(self._ready.value)
            if taken:
                self.sent += 1


class StreamSink:
    """Accepts beats on ``<name>__*``; ``recv()`` returns a ``data.Const`` of ``layout``.

    ``cycles`` counts clock cycles since the sink started; ``first_cycle`` / ``last_cycle`` are
    the cycles of the first and latest beat received (for throughput measurements).
    """

    def __init__(self, dut, name: str, clock, layout, pause=None):
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._payload = getattr(dut, f"{name}__payload")
        self._clock, self._layout, self._pause = clock, layout, pause
        self.queue: deque = deque()
        self._have = Event()
        self._ready.value = 0
        self.received = 0
        self.cycles = 0
        self.first_cycle = None
        self.last_cycle = None
        cocotb.start_soon(self._run())

    async def recv(self) -> data.Const:
        while not self.queue:
            self._have.clear()
            await self._have.wait()
        return self.queue.popleft()

    async def _run(self):
        while True:
            await FallingEdge(self._clock)
            self.cycles += 1
            ready = not (self._pause and next(self._pause))
            self._ready.value = int(ready)
            await ReadOnly()
            if ready and self._valid.value:
                self.queue.append(data.Const(self._layout, int(self._payload.value)))
                self.received += 1
                if self.first_cycle is None:
                    self.first_cycle = self.cycles
                self.last_cycle = self.cycles
                self._have.set()


class TB:
    """Clock + reset for an Amaranth top (``clk``, ``rst``); counts cycles."""

    def __init__(self, dut, period_ns: float = 10.0):
        from cocotb.clock import Clock
        self.dut = dut
        self.clock = dut.clk
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())

    async def reset(self, cycles: int = 3):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.clock)
        self.dut.rst.value = 0
        await RisingEdge(self.clock)
