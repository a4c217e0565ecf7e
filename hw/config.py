"""The one frozen description of a generated accelerator.

:class:`AcceleratorConfig` is validated in ``__post_init__`` (messages name the field and value),
derives every width the gateware needs, and maps products onto the target device's DSP blocks,
placing the rest in LUT multipliers. ``to_json()`` is what ``gen build`` writes beside the Verilog;
``sim/`` and ``host/`` read that instead of re-deriving anything.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

__all__ = ["AcceleratorConfig", "Device", "DEVICES", "PRESETS", "PE_KINDS", "ConfigError"]


class ConfigError(ValueError):
    """An invalid configuration, or one that does not fit its device."""


@dataclass(frozen=True)
class Device:
    name: str
    family: str          # "ecp5" | "ice40"
    luts: int            # LUT4s
    dsps: int            # 18x18 multipliers (MULT18X18D) / SB_MAC16
    bram_kbits: int      # block RAM (EBR) in kbit
    nextpnr_args: tuple  # arguments selecting the part for nextpnr


DEVICES = {d.name: d for d in (
    Device("ecp5-25f", "ecp5", 24_288, 28, 1_008, ("--25k", "--package", "CABGA381")),
    Device("ecp5-45f", "ecp5", 43_848, 72, 1_944, ("--45k", "--package", "CABGA381")),
    Device("ecp5-85f", "ecp5", 83_640, 156, 3_744, ("--85k", "--package", "CABGA381")),
    Device("ice40-up5k", "ice40", 5_280, 8, 120, ("--up5k", "--package", "sg48")),
)}

DATAFLOWS = ("os",)
PE_KINDS = ("mac", "fip")
# LUT4s per LUT-multiplier partial-product bit and per accumulator bit of a PE (accumulator, shadow,
# read-out mux), measured on ECP5 (8x8 array post-route: 91 LUTs per PE; an 8x8 Booth LUT
# multiplier synthesises to 115 LUT4 + 20 CCU2C), and the fraction of the device the generator is
# willing to fill
LUTS_PER_PP_BIT = 2.6
LUTS_PER_ACC_BIT = 3.3
LUT_FILL = 0.9
DSP_WIDTH = {"ecp5": 18, "ice40": 16}     # MULT18X18D / SB_MAC16 operand width
# DSPs each vector unit takes: (per lane, per copy) — fitted to yosys on ECP5: the units alone at
# 16 lanes (Shiftmax 128, GELU 64, LayerNorm 50; README "Vector units") and whole accelerators
# (2 lanes, one row unit each: 37; 8 lanes, two each: 223); row units come in `row_units` copies
VECTOR_DSPS = {"softmax": (8.0, 4), "gelu": (4.0, 0), "layernorm": (3.2, 3)}


@dataclass(frozen=True)
class AcceleratorConfig:
    """A generated accelerator.

    Parameters
    ----------
    rows, cols : systolic array size (PEs). Output-stationary: a tile is ``rows x cols`` of C.
    wbits : weight (B operand) width, 4 or 8, signed.
    abits : activation (A operand) width, 8 or 16, signed.
    kmax : largest reduction length K the accumulators must hold without overflow.
    dataflow : ``"os"`` (output-stationary; see :mod:`hw.systolic` for why).
    lanes : width of the nonlinear units (Shiftmax, GELU, LayerNorm: elements per cycle); defaults
        to ``cols`` and must divide it (the core splits each ``cols``-element scratchpad word into
        ``cols / lanes`` beats for them).
    requant_lanes : requantizers in the drain (default ``cols``: a word per cycle); a divisor of
        ``cols`` makes the drain take each word in ``cols / requant_lanes`` beats (fewer DSPs and
        LUTs, a slower drain).
    mbits : requantizer mantissa width (31 reproduces the reference; 18 fits one DSP port).
    out_fifo_rows : depth of the array's output row buffer, in tile rows (>= 2 * rows).
    device : target part, a key of :data:`DEVICES`.
    mode : numeric mode of the nonlinear units, ``"dyad"`` or ``"ivit"``.
    max_row : longest softmax / GELU row (sequence length, MLP width) the units buffer.
    max_channels : largest LayerNorm width C.
    row_units : copies of each row unit (Shiftmax, LayerNorm, ShiftGELU) working on consecutive
        rows at once (their per-row reciprocal and root latency overlaps).
    split_engines : LayerNorm's wide root, reciprocal and Newton engines take two cycles per bit
        (:class:`hw.divider.SequentialDivider` ``split_steps``): a faster unit clock for
        rows near ``max_channels``, slower short rows (the digits ViT: 13.7 % more cycles)
    pe : the processing element (:mod:`hw.systolic`): ``"mac"``, one multiply-accumulate per
        beat; ``"fip"``, the fast inner product: two beats per product ``(a0 + b1)(a1 + b0)``,
        one multiplier per two PEs, and per-row / per-column correction terms, so the array
        needs about half the multipliers for the same throughput.
    array_dsps : at most this many array products in DSP blocks (default ``-1``: every DSP the
        requantizers and vector units leave; ``0``: all in LUT multipliers, which routed with far
        less congestion on the ULX3S-85F).
    """
    rows: int = 8
    cols: int = 8
    wbits: int = 8
    abits: int = 8
    kmax: int = 4096
    dataflow: str = "os"
    lanes: int = 0
    requant_lanes: int = 0
    mbits: int = 31
    out_fifo_rows: int = 0
    device: str = "ecp5-85f"
    mode: str = "dyad"
    max_row: int = 256
    max_channels: int = 1024
    row_units: int = 2
    pe: str = "mac"
    array_dsps: int = -1
    split_engines: bool = False
    name: str = ""

    def __post_init__(self):
        def need(cond, field, msg):
            if not cond:
                raise ConfigError(f"{field}={getattr(self, field)!r}: {msg}")

        for f in ("rows", "cols", "kmax"):
            v = getattr(self, f)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f,
                 "must be a positive integer")
        need(self.rows <= 64 and self.cols <= 64, "rows" if self.rows > 64 else "cols",
             "arrays larger than 64 are not supported")
        need(self.wbits in (4, 8), "wbits", "weight bits must be 4 or 8")
        need(self.abits in (8, 16), "abits", "activation bits must be 8 or 16")
        need(self.kmax <= 1 << 20, "kmax", "must be <= 2^20")
        need(self.dataflow in DATAFLOWS, "dataflow", f"must be one of {DATAFLOWS}")
        need(self.pe in PE_KINDS, "pe", f"must be one of {PE_KINDS}")
        need(isinstance(self.mbits, int) and 8 <= self.mbits <= 31, "mbits",
             "must be an integer in [8, 31]")
        need(self.device in DEVICES, "device", f"unknown device; known: {', '.join(DEVICES)}")
        need(self.mode in ("dyad", "ivit"), "mode", "must be 'dyad' or 'ivit'")
        need(isinstance(self.max_row, int) and 1 <= self.max_row <= 4096, "max_row",
             "must be an integer in [1, 4096]")
        need(isinstance(self.max_channels, int) and 1 <= self.max_channels <= 1024,
             "max_channels", "must be an integer in [1, 1024]")
        need(isinstance(self.row_units, int) and 1 <= self.row_units <= 8, "row_units",
             "must be an integer in [1, 8]")
        need(isinstance(self.split_engines, bool), "split_engines", "must be True or False")
        need(isinstance(self.array_dsps, int) and self.array_dsps >= -1, "array_dsps",
             "must be -1 (automatic) or a DSP count >= 0")
        if self.lanes == 0:
            object.__setattr__(self, "lanes", self.cols)
        need(isinstance(self.lanes, int) and self.lanes >= 1, "lanes", "must be >= 1")
        need(self.cols % self.lanes == 0, "lanes", f"must divide cols ({self.cols})")
        if self.requant_lanes == 0:
            object.__setattr__(self, "requant_lanes", self.cols)
        need(isinstance(self.requant_lanes, int) and self.requant_lanes >= 1, "requant_lanes",
             "must be >= 1")
        need(self.cols % self.requant_lanes == 0, "requant_lanes",
             f"must divide cols ({self.cols})")
        if self.out_fifo_rows == 0:
            object.__setattr__(self, "out_fifo_rows", 1 << max(2, math.ceil(math.log2(
                2 * self.rows))))
        need(self.out_fifo_rows >= 2 * self.rows, "out_fifo_rows", f"must be >= 2 * rows "
             f"({2 * self.rows})")
        if not self.name:
            object.__setattr__(self, "name", f"dyad_{self.rows}x{self.cols}_w{self.wbits}"
                                             f"a{self.abits}"
                                             + ("_ivit" if self.mode == "ivit" else "")
                                             + ("_fip" if self.pe == "fip" else ""))
        need(self.name.isidentifier(), "name", "must be an identifier")
        self._check_fit()

    # derived ------------------------------------------------------------------------------------
    @property
    def acc_bits(self) -> int:
        """Accumulator width: ``wbits + abits + ceil(log2(kmax))`` (exact for every input)."""
        return self.wbits + self.abits + max(0, math.ceil(math.log2(self.kmax)))

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def dev(self) -> Device:
        return DEVICES[self.device]

    @property
    def requant_dsps(self) -> int:
        """DSPs the requantizers take (``requant_lanes`` of them; yosys splits each product into
        18x18 blocks): ``(acc + bias) * m`` and the residual ``r * rm`` per lane."""
        w = DSP_WIDTH[self.dev.family]
        m_w = self.mbits + 1
        x_w = max(self.acc_bits, 32) + 1
        per_lane = math.ceil(x_w / w) * math.ceil(m_w / w) + math.ceil(16 / w) * math.ceil(m_w / w)
        return self.requant_lanes * per_lane

    @property
    def vector_dsps(self) -> int:
        """DSPs the vector units' own multipliers take (yosys maps every one of their products
        onto DSP blocks, so they come first)."""
        copies = {"softmax": self.row_units, "layernorm": self.row_units,
                  "gelu": self.row_units if self.mode == "ivit" else 1}
        return math.ceil(sum((per_lane * self.lanes + fixed) * copies[unit]
                             for unit, (per_lane, fixed) in VECTOR_DSPS.items()))

    @property
    def array_multipliers(self) -> int:
        """Multipliers of the array: one per PE (``mac``); with ``fip`` one per two PEs of a row
        and one per two rows and per two columns for the correction terms."""
        if self.pe == "mac":
            return self.pes
        return self.rows * -(-self.cols // 2) + -(-self.rows // 2) + -(-self.cols // 2)

    @property
    def dsp_products(self) -> int:
        """How many array multipliers are hardware multipliers (what the requantizers and the
        vector units leave, at most ``array_dsps``); the rest are LUT multipliers."""
        left = max(0, self.dev.dsps - self.requant_dsps - self.vector_dsps)
        return min(self.array_multipliers, left,
                   self.array_dsps if self.array_dsps >= 0 else left)

    @property
    def lut_products(self) -> int:
        return self.array_multipliers - self.dsp_products

    @property
    def lut_multiplier_luts(self) -> int:
        """Estimated LUT4s of one LUT multiplier (partial products + adder tree); a ``fip``
        product's operands are sums, a bit wider than ``a`` and ``b``."""
        if self.pe == "fip":
            return math.ceil((max(self.wbits, self.abits) + 1) ** 2 * LUTS_PER_PP_BIT)
        return math.ceil(self.wbits * self.abits * LUTS_PER_PP_BIT)

    @property
    def tile_spacing(self) -> int:
        """Minimum cycles between the last beats of consecutive tiles (see :mod:`hw.systolic`).
        Tiles with ``K >= tile_spacing`` stream back to back without bubbles."""
        return max(self.rows, self.cols)

    def multiplier_uses_dsp(self, index: int) -> bool:
        """DSPs go to the first ``dsp_products`` array multipliers (:mod:`hw.systolic` numbers
        them: the PEs' in row-major order, then the corrections')."""
        return index < self.dsp_products

    @property
    def array_luts(self) -> int:
        """Estimated LUT4s of the whole array (PEs + LUT multipliers)."""
        return math.ceil(self.pes * self.acc_bits * LUTS_PER_ACC_BIT
                         + self.lut_products * self.lut_multiplier_luts)

    def _check_fit(self):
        need_luts = self.array_luts
        have = int(self.dev.luts * LUT_FILL)
        if need_luts > have:
            raise ConfigError(
                f"array {self.rows}x{self.cols} does not fit {self.device}: "
                f"{self.array_multipliers} multipliers, "
                f"{self.dsp_products} in DSPs ({self.dev.dsps} available, {self.requant_dsps} "
                f"for requantizers), {self.lut_products} in "
                f"LUT multipliers; the array needs ~{need_luts} LUTs of {have} usable "
                f"({self.dev.luts} on the device)")
        if self.requant_dsps > self.dev.dsps:
            raise ConfigError(
                f"cols={self.cols}, mbits={self.mbits}: the requantizers need "
                f"{self.requant_dsps} DSPs, {self.device} has {self.dev.dsps}; use fewer columns "
                f"or a narrower mantissa")

    # I/O ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["derived"] = {"acc_bits": self.acc_bits, "pes": self.pes,
                        "array_multipliers": self.array_multipliers,
                        "requant_dsps": self.requant_dsps, "vector_dsps": self.vector_dsps,
                        "dsp_products": self.dsp_products, "lut_products": self.lut_products,
                        "tile_spacing": self.tile_spacing}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "AcceleratorConfig":
        d = {k: v for k, v in d.items() if k != "derived"}
        return cls(**d)

    def replace(self, **kw) -> "AcceleratorConfig":
        """A copy with ``kw`` changed; derived defaults (FIFO depth, name) re-derived unless
        given. Lanes narrower than the array (a board preset's vector or requantiser lanes) are
        kept while they divide the new ``cols``; otherwise they follow ``cols``."""
        cols = kw.get("cols", self.cols)
        for field in ("lanes", "requant_lanes"):
            lanes = getattr(self, field)
            kw.setdefault(field, lanes if lanes < self.cols and cols % lanes == 0 else 0)
        for auto in ("out_fifo_rows", "name"):
            kw.setdefault(auto, type(self).__dataclass_fields__[auto].default)
        return replace(self, **kw)


PRESETS = {
    "tiny": AcceleratorConfig(rows=4, cols=4, kmax=1024, device="ecp5-25f"),
    "ecp5-8x8": AcceleratorConfig(rows=8, cols=8),
    "ecp5-16x16": AcceleratorConfig(rows=16, cols=16),
    "bert-w8a16": AcceleratorConfig(rows=8, cols=16, abits=16, mbits=17),
    "icebreaker": AcceleratorConfig(rows=2, cols=2, kmax=1024, lanes=1, mbits=15,
                                    device="ice40-up5k"),
    # the whole accelerator on a ULX3S-85F: one row unit of each kind, 2-lane vector units,
    # 2 requantisers (the drain takes a word in 4 beats, as the vector units do), 17-bit requant
    # mantissas (3 DSPs per lane, not 6) and the array's products in LUT multipliers; with its
    # 64 products in DSPs router2's overuse stalled near 10 000 wires (README "Boards")
    "ulx3s-8x8": AcceleratorConfig(rows=8, cols=8, mbits=17, row_units=1, lanes=2,
                                   requant_lanes=2, array_dsps=0),
    # the smallest accelerator that runs whole models (V = 2 lanes, rows of up to 64)
    "icebreaker-2x2": AcceleratorConfig(rows=2, cols=2, kmax=1024, mbits=15, row_units=1,
                                        max_row=64, max_channels=64, device="ice40-up5k"),
}
