"""cocotb bench: :class:`hw.bram.RegisteredReadMemory` against a dictionary, word for word.

One write and one read every cycle (the write enable random; never a write of the word whose
read address is given in the same cycle: both reach the block RAM at the same edge, which the
device leaves undefined): every word filled with edge patterns (all ones, zero, alternating
bits, the top bit alone) and random data, the first and last addresses read back to back, and
random traffic; each read's data is checked :data:`~hw.bram.LATENCY` cycles after its address,
and a word written the cycle before must be read. Elaborated for ECP5 this runs the DP16KD blocks
through ``sim/models/DP16KD.v``.
"""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from hw.bram import LATENCY
from sim.streams import TB

SEED = int(os.environ.get("DYAD_SEED", "1"))


def patterns(width: int) -> list[int]:
    ones = (1 << width) - 1
    alternating = int("01" * width, 2) & ones
    return [ones, 0, alternating, ones ^ alternating, 1 << (width - 1)]


@cocotb.test()
async def reads_match_writes(dut):
    width, depth = int(os.environ["DYAD_WIDTH"]), int(os.environ["DYAD_DEPTH"])
    rng = np.random.default_rng(SEED)
    tb = TB(dut)
    await tb.reset()
    edge = patterns(width)

    def random_word() -> int:
        return int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1)

    # the ops: fill every word (edge patterns first), then read the ends and random traffic
    ops = [(a, edge[a % len(edge)] if a < 4 * len(edge) else random_word(), True, a - 1)
           for a in range(depth)]
    ops += [(0, 0, False, a) for a in (0, depth - 1, 0, depth - 1, depth - 1, 0)]
    for _ in range(6 * depth + 200):
        wa, ra = int(rng.integers(depth)), int(rng.integers(depth))
        ops.append((wa, random_word(), bool(rng.random() < 0.5), ra))
    mem: dict[int, int] = {}
    due: list[int | None] = []
    checked = 0
    for wa, wd, we, ra in ops:
        ra = ra % depth
        if we and wa == ra:
            wa = (wa + 1) % depth
        due.append(mem.get(ra))
        if we:
            mem[wa] = wd
        dut.write__addr.value, dut.write__data.value, dut.write__en.value = wa, wd, int(we)
        dut.read__addr.value = ra
        await RisingEdge(dut.clk)
        await ReadOnly()
        # after this edge, read.data holds the word whose address was driven LATENCY - 1
        # cycles earlier
        if len(due) >= LATENCY and due[-LATENCY] is not None:
            got, want = int(dut.read__data.value), due[-LATENCY]
            assert got == want, f"read {len(due) - LATENCY}: {got:#x}, expected {want:#x}"
            checked += 1
        await FallingEdge(dut.clk)
    dut._log.info(f"RegisteredReadMemory {width} x {depth}: {checked} reads checked")
    assert checked >= depth
