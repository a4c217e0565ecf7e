"""The accelerator's memories: the scratchpad word, the requantiser and vector-unit table entries,
their depths, and what HELLO reports about them — shared by the gateware (:mod:`hw.top`), the
compiler and the host.

The scratchpad is one ``lib.memory.Memory`` of ``V``-element words (``V = cols``, the array's
width) with a write port (element enables) and three synchronous read ports — operand A / row
reader / host, operand B, residual — so the array, the vector units and the requantiser are each
fed every cycle (synthesis replicates the storage per read port).

The tables (instructions, requantiser and vector-unit parameters) are written by the host one
32-bit word at a time into slices of their rows (:func:`table_geometry`); a requantiser entry is
``V / R`` rows of ``R = requant_lanes`` lanes, one per pass of the drain's requantisers.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import signed
from amaranth.lib import data

from . import gelu as gelu_hw
from . import shiftgelu as shiftgelu_hw
from . import softmax as softmax_hw
from .config import AcceleratorConfig, ConfigError
from .isa import ELEM_BITS, WORD_BITS, Target, instr_layout, ptab_lane_layout, words_for
from .link import LinkParams

__all__ = ["Sizes", "spad_layout", "ptab_layout", "vtab_layout", "table_geometry", "hello_words",
           "check_core",
           "HELLO_MAGIC", "HELLO_FIELDS", "LINK_FIELDS", "PROTOCOL_VERSION"]

HELLO_MAGIC = 0x44594144        # "DYAD"
PROTOCOL_VERSION = 3          # 3: the tables are write-only


@dataclass(frozen=True)
class Sizes:
    """Memory depths (entries)."""
    spad: int = 4096
    imem: int = 256
    ptab: int = 256
    vtab: int = 8

    def __post_init__(self):
        for name in ("spad", "imem", "ptab", "vtab"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= 1 << 16:
                raise ConfigError(f"{name} depth {v!r} must be an integer in [1, 65536]")
        if self.vtab > 256:
            raise ConfigError(f"vtab depth {self.vtab} must be <= 256")


def spad_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(ELEM_BITS), cfg.cols)


def ptab_layout(cfg: AcceleratorConfig) -> data.ArrayLayout:
    return data.ArrayLayout(ptab_lane_layout(cfg.mbits), cfg.cols)


def table_geometry(cfg: AcceleratorConfig, sizes: Sizes) -> dict:
    """Per table :class:`~hw.isa.Target`: ``(rows per entry, memory depth, row bits)``."""
    out = {}
    for t, layout, depth, rows in ((Target.IMEM, instr_layout, sizes.imem, 1),
                                   (Target.PTAB, ptab_layout(cfg), sizes.ptab,
                                    cfg.cols // cfg.requant_lanes),
                                   (Target.VTAB, vtab_layout(cfg), sizes.vtab, 1)):
        out[t] = (rows, depth * rows, words_for(layout.size) // rows * WORD_BITS)
    return out


def gelu_params_layout(cfg: AcceleratorConfig):
    return shiftgelu_hw.params_layout() if cfg.mode == "ivit" else gelu_hw.params_layout()


def vtab_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    return data.StructLayout({"softmax": softmax_hw.params_layout(cfg.mode),
                              "gelu": gelu_params_layout(cfg)})


HELLO_FIELDS = ("magic", "version", "rows", "cols", "lanes", "wbits", "abits", "mbits",
                "acc_bits", "ivit", "max_row", "max_channels", "spad", "imem", "ptab", "vtab",
                "link_buffer", "clk_hz", "baud")
LINK_FIELDS = HELLO_FIELDS[-3:]         # the link's, not the program's


def hello_words(cfg: AcceleratorConfig, sizes: Sizes, link: LinkParams) -> list[int]:
    """What HELLO returns (:data:`HELLO_FIELDS`): the parameters a program is built for and
    the link's (receive buffer bytes, clock, line rate)."""
    return [HELLO_MAGIC, PROTOCOL_VERSION, cfg.rows, cfg.cols, cfg.lanes, cfg.wbits, cfg.abits,
            cfg.mbits, cfg.acc_bits, int(cfg.mode == "ivit"), cfg.max_row, cfg.max_channels,
            sizes.spad, sizes.imem, sizes.ptab, sizes.vtab, link.buffer, link.clk_hz, link.baud]


def check_core(cfg: AcceleratorConfig) -> None:
    V, L = cfg.cols, cfg.lanes
    if cfg.rows != V:
        raise ConfigError(f"the accelerator core needs a square array (got {cfg.rows}x{V})")
    if V < 2 or V & (V - 1):
        raise ConfigError(f"the accelerator core needs a power-of-two array size >= 2, not {V}")
    if L & (L - 1):
        raise ConfigError(f"the accelerator core needs power-of-two vector lanes, not {L}")
