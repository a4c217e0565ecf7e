"""cocotb bench for the vector units (``$DYAD_UNIT``: gelu, shiftgelu, shiftmax, layernorm) against
:mod:`gen.intops`, bit for bit.

``$DYAD_UNIT_ARGS`` (JSON) holds the unit's constructor arguments. For every case (scale, row
length, output width) the bench loads the layer constants into ``params`` while the unit is idle,
streams seeded rows — normal logits of several spreads, all-equal, all-minimum, all-maximum, one
dominant element, the longest row, length 1 — with random stalls on both sides, and compares every
row. A stall-free pass prints the sustained elements per cycle.
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from gen import intops, unit_params
from hw.pipeline import vector_layout
from sim.streams import TB, StreamSink, StreamSource, random_pauses

SEED = int(os.environ.get("DYAD_SEED", "1"))
UNIT = os.environ.get("DYAD_UNIT", "")
ARGS = json.loads(os.environ.get("DYAD_UNIT_ARGS", "{}"))


def _unit_params(scale: float, row_len: int, out_bits: int) -> tuple:
    """``(params layout, params value, golden(row) -> outputs)`` for one case."""
    if UNIT == "layernorm":
        return None, None, lambda row: intops.layernorm_normalize(row, mode=ARGS["mode"])[0]
    if UNIT == "shiftgelu":
        from hw.shiftgelu import params_layout
        return (params_layout(), unit_params.shiftgelu(scale),
                lambda row: intops.shift_gelu(row, scale, mode="ivit")[0])
    if UNIT == "gelu":
        from hw.gelu import params_layout
        k = intops.ct_gelu_poly(scale, ARGS["in_bits"])
        return (params_layout(), unit_params.gelu_from(k),
                lambda row: intops.gelu_poly(row, scale, consts=k)[0])
    from hw.softmax import params_layout
    mode = ARGS["mode"]
    return (params_layout(mode), unit_params.shiftmax(mode, scale, row_len, out_bits),
            lambda row: intops.shiftmax(row, scale, out_bits=out_bits, mode=mode)[0])


def _out_bits() -> int:
    if UNIT == "layernorm":
        from hw.layernorm import OUT_BITS
        return OUT_BITS
    if UNIT == "shiftgelu":
        return ARGS.get("in_bits", 8) + 8
    if UNIT == "gelu":
        from hw.gelu import MAX_FRAC_BITS
        return ARGS["in_bits"] + MAX_FRAC_BITS + 1
    return 16


def _rows(rng, length: int, bits: int, n: int) -> list[np.ndarray]:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    rows = []
    for sigma in (0.1, 0.3, 1.0):
        for _ in range(max(1, n // 3)):
            rows.append(np.clip(np.rint(rng.normal(0, sigma * hi, length)), lo, hi))
    dominant = np.full(length, lo)
    dominant[rng.integers(length)] = hi
    rows += [np.full(length, 7), np.full(length, lo), np.full(length, hi), dominant,
             rng.integers(lo, hi + 1, length)]
    return [r.astype(np.int64) for r in rows]


class VectorTB(TB):
    def __init__(self, dut, stall: float):
        super().__init__(dut)
        lanes, in_bits = ARGS["lanes"], ARGS.get("in_bits", 8)
        pause = (lambda s: random_pauses(stall, SEED + s)) if stall else (lambda s: None)
        self.lanes = lanes
        self.i = StreamSource(dut, "i", dut.clk, vector_layout(in_bits, lanes), pause(1))
        self.o = StreamSink(dut, "o", dut.clk, vector_layout(_out_bits(), lanes), pause(2))

    def send_row(self, row) -> None:
        L = self.lanes
        chunks = [row[k:k + L] for k in range(0, len(row), L)]
        for b, vals in enumerate(chunks):
            self.i.send_nowait({"data": [int(v) for v in vals] + [0] * (L - len(vals)),
                                "count": len(vals), "last": int(b == len(chunks) - 1)})

    async def recv_row(self) -> np.ndarray:
        out = []
        while True:
            beat = await self.o.recv()
            out += list(beat.data)[:beat.count]
            if beat.last:
                return np.array(out, np.int64)


def _cases():
    in_bits = ARGS.get("in_bits", 8)
    max_row = ARGS.get("max_row", 64)
    if UNIT == "gelu":
        scales = [4 / 127, 8 / 127, 0.5] if in_bits == 8 else [1e-3, 8 / 32767, 0.01]
        return [(s, max_row, None) for s in scales]
    if UNIT == "layernorm":
        return [(None, max_row, None), (None, 1, None), (None, max(1, max_row // 3), None)]
    if UNIT == "shiftgelu":
        scales = [4 / 127, 8 / 127, 0.1] if in_bits == 8 else [0.01, 0.003]
        return [(s, max_row, None) for s in scales] + [(4 / 127 if in_bits == 8 else 0.01, 1,
                                                        None)]
    return [(0.05, max_row, 16), (0.2, 17, 16), (0.02, 1, 16), (0.1, max(1, max_row // 2 + 1), 8),
            (1.5, 3, 16)]


async def _load_case(dut, scale, length, out_bits):
    """Drive the case's constants onto ``params`` (while the unit is idle), with a ``load``
    pulse where the unit has one (the dyad GELU's table copies); returns the golden."""
    layout, value, golden = _unit_params(scale, length, out_bits)
    if layout is not None:
        dut.params.value = layout.const(value).as_bits()
        if UNIT == "gelu":
            dut.load.value = 1
            await ClockCycles(dut.clk, 1)
            dut.load.value = 0
    return golden


@cocotb.test()
async def rows_bit_exact(dut):
    tb = VectorTB(dut, stall=0.3)
    await tb.reset()
    rng = np.random.default_rng(SEED)
    in_bits = ARGS.get("in_bits", 8)
    checked = rows_checked = 0
    for scale, length, out_bits in _cases():
        golden = await _load_case(dut, scale, length, out_bits)
        rows = _rows(rng, length, in_bits, 9)
        for row in rows:
            tb.send_row(row)
        for n, row in enumerate(rows):
            got = await tb.recv_row()
            want = golden(row)
            if not np.array_equal(got, want):
                k = int(np.argwhere(got != want)[0][0]) if got.shape == want.shape else -1
                raise AssertionError(f"scale {scale} L={length} row {n}: element {k}: got "
                                     f"{got[k] if k >= 0 else got.shape}, expected "
                                     f"{want[k] if k >= 0 else want.shape}")
            checked += len(row)
            rows_checked += 1
        await ClockCycles(dut.clk, 5)           # idle before the next case's params change
    print(f"VECTORS unit={UNIT} args={json.dumps(ARGS, sort_keys=True)} rows={rows_checked} "
          f"elements={checked} bit-exact", flush=True)


@cocotb.test()
async def throughput(dut):
    tb = VectorTB(dut, stall=0.0)
    await tb.reset()
    rng = np.random.default_rng(SEED + 1)
    in_bits = ARGS.get("in_bits", 8)
    scale, length, out_bits = _cases()[0]
    golden = await _load_case(dut, scale, length, out_bits)
    rows = _rows(rng, length, in_bits, 12)
    for row in rows:
        tb.send_row(row)
    for row in rows:
        assert np.array_equal(await tb.recv_row(), golden(row))
    span = tb.o.last_cycle - tb.o.first_cycle + 1
    elements = sum(len(r) for r in rows)
    print(f"THROUGHPUT unit={UNIT} args={json.dumps(ARGS, sort_keys=True)} row={length} "
          f"elements={elements} cycles={span} elements/cycle={elements / span:.3f} "
          f"per-lane={elements / span / ARGS['lanes']:.3f}", flush=True)
