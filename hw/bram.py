"""A simple dual-port memory with a registered read: ``read.data`` is the word at ``read.addr``
three cycles (:data:`LATENCY`) later, free-running (no read enable), the form the row buffers
read in (:class:`hw.rowbuffer.RowReplay`). The read address is registered first, a copy per
block RAM (one address register reaching fifteen blocks was 8.1 ns of routing in the 16-lane
LayerNorm), then read, then the word registered. A write is registered too (its enable and
address copied per block, its data sliced), so it lands a cycle after it is given.

Elaborated for ECP5 (see :mod:`hw.dsp`), the memory becomes DP16KD blocks of 1024 x 18 bits side
by side (port A writes, port B reads) with the block's own output register on (``REGMODE_B =
"OUTREG"``), so the last register is inside the block. yosys maps a memory onto DP16KD with that
register off and never moves a fabric register into it, and a DP16KD without it takes 5.8 ns
from clock to data (nextpnr's timing model), most of a 150 MHz cycle before any routing: it was
the 16-lane LayerNorm's longest path. A memory deeper than 1024 words is banks of such blocks,
each block writing only its bank's addresses; the bank read is chosen after the blocks' output
registers by a bank number registered beside them (the ``ivit`` LayerNorm's 1 408-word buffer
in yosys's mapping, output registers off, was its path).

Everywhere else (simulation, iCE40) it is a ``lib.memory.Memory`` with a synchronous read port
between fabric registers: the same behaviour and latency, which the simulations check; the
primitive's wiring is checked against a model of the block (``sim/models/DP16KD.v``) under
Verilator.
"""
from __future__ import annotations

from amaranth.hdl import Array, ClockSignal, Const, Instance, Module, Signal, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from .dsp import family
from .pipeline import register, replicas

__all__ = ["LATENCY", "BLOCK_WIDTH", "BLOCK_DEPTH", "RegisteredReadMemory"]

LATENCY = 3
BLOCK_WIDTH, BLOCK_DEPTH = 18, 1024


class RegisteredReadMemory(wiring.Component):
    """``depth`` words of ``width`` bits: ``write`` (``addr``, ``data``, ``en``) stores a word at
    a cycle later; ``read.data`` is the word at ``read.addr`` :data:`LATENCY` cycles later (a
    word written in an earlier cycle than the read's address; a write of the word in that same
    cycle leaves the read undefined, as on the device)."""

    def __init__(self, width: int, depth: int):
        if width < 1 or depth < 1:
            raise ValueError(f"RegisteredReadMemory: width and depth must be >= 1, got "
                             f"{width} x {depth}")
        self.width, self.depth = width, depth
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "write": In(wiring.Signature({"addr": Out(abits), "data": Out(width),
                                          "en": Out(1)})),
            "read": In(wiring.Signature({"addr": Out(abits), "data": In(width)})),
        })

    @staticmethod
    def uses_blocks(platform, depth: int) -> bool:
        """Whether the memory becomes DP16KD blocks with their output registers on."""
        return family(platform) == "ecp5"

    def elaborate(self, platform):
        m = Module()
        if self.uses_blocks(platform, self.depth):
            self._blocks(m)
            return m
        m.submodules.mem = mem = memory.Memory(shape=unsigned(self.width), depth=self.depth,
                                               init=[])
        w, r = mem.write_port(), mem.read_port()
        m.d.comb += [w.addr.eq(register(m, self.write.addr, "waddr")),
                     w.data.eq(register(m, self.write.data, "wdata")),
                     w.en.eq(register(m, self.write.en, "wen")),
                     r.addr.eq(register(m, self.read.addr, "raddr"))]
        m.d.sync += self.read.data.eq(r.data)
        return m

    def _blocks(self, m: Module) -> None:
        columns = -(-self.width // BLOCK_WIDTH)
        banks = -(-self.depth // BLOCK_DEPTH)
        low = (BLOCK_DEPTH - 1).bit_length()            # address bits inside a block
        blocks = banks * columns
        raddrs = replicas(m, self.read.addr, blocks, "raddr")
        waddrs = replicas(m, self.write.addr, blocks, "waddr")
        wens = replicas(m, self.write.en, blocks, "wen", reset_less=False)
        # per column, the bank read: its number beside the address register, then beside the
        # block's read, so it chooses among the blocks' output registers
        bank_at = [register(m, register(m, raddrs[c * banks][low:], f"bank{c}_a"), f"bank{c}")
                   for c in range(columns)] if banks > 1 else None
        for c in range(columns):
            lo = c * BLOCK_WIDTH
            bits = min(BLOCK_WIDTH, self.width - lo)
            di = Signal(BLOCK_WIDTH, name=f"di{c}")
            m.d.sync += di.eq(self.write.data[lo:lo + bits])
            outs = []
            for b in range(banks):
                k = c * banks + b
                raddr, waddr, wen = raddrs[k], waddrs[k], wens[k]
                do = Signal(BLOCK_WIDTH, name=f"do{c}_{b}")
                outs.append(do[:bits])
                write = wen & (waddr[low:] == b) if banks > 1 else wen
                ports = {"i_CLKA": ClockSignal(), "i_CEA": Const(1), "i_OCEA": Const(1),
                         "i_WEA": write, "i_RSTA": Const(0),
                         "i_CLKB": ClockSignal(), "i_CEB": Const(1), "i_OCEB": Const(1),
                         "i_WEB": Const(0), "i_RSTB": Const(0)}
                for n in range(3):
                    ports[f"i_CSA{n}"], ports[f"i_CSB{n}"] = Const(0), Const(0)
                # 18-bit words: address bits 13..4, bits 1 and 0 of port A the byte enables
                for n in range(14):
                    ports[f"i_ADA{n}"] = (waddr[n - 4] if 4 <= n < 4 + min(low, len(waddr))
                                          else Const(int(n < 2)))
                    ports[f"i_ADB{n}"] = (raddr[n - 4] if 4 <= n < 4 + min(low, len(raddr))
                                          else Const(0))
                for n in range(BLOCK_WIDTH):
                    ports[f"i_DIA{n}"], ports[f"i_DIB{n}"] = di[n], Const(0)
                    ports[f"o_DOB{n}"] = do[n]
                m.submodules[f"block{k}"] = Instance(
                    "DP16KD", p_DATA_WIDTH_A=BLOCK_WIDTH, p_DATA_WIDTH_B=BLOCK_WIDTH,
                    p_REGMODE_A="NOREG", p_REGMODE_B="OUTREG", p_RESETMODE="SYNC",
                    p_ASYNC_RESET_RELEASE="SYNC", p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                    p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="DISABLED", **ports)
            m.d.comb += self.read.data[lo:lo + bits].eq(
                Array(outs)[bank_at[c]] if banks > 1 else outs[0])
