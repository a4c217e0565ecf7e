"""cocotb bench: the systolic array against numpy, bit for bit.

Reads the :class:`~hw.config.AcceleratorConfig` from ``$DYAD_CONFIG`` (JSON). Tests: random tiles
(K from 1 to kmax) with random stalls on all three streams, edge values at the largest K, GEMMs
larger than the array tiled by the driver, and a stall-free utilisation measurement (the figure
is printed, never asserted; ``$DYAD_UTIL_SIZES`` picks the M=N=K sizes).
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from hw.config import AcceleratorConfig
from hw.systolic import a_layout, b_layout, o_layout
from sim.streams import TB, StreamSink, StreamSource, random_pauses

SEED = int(os.environ.get("DYAD_SEED", "1"))


def _config() -> AcceleratorConfig:
    return AcceleratorConfig.from_dict(json.loads(os.environ["DYAD_CONFIG"]))


class ArrayTB(TB):
    def __init__(self, dut, cfg, stall: float):
        super().__init__(dut)
        pause = (lambda s: random_pauses(stall, SEED + s)) if stall else (lambda s: None)
        self.cfg = cfg
        self.a = StreamSource(dut, "a", dut.clk, a_layout(cfg), pause(1))
        self.b = StreamSource(dut, "b", dut.clk, b_layout(cfg), pause(2))
        self.o = StreamSink(dut, "o", dut.clk, o_layout(cfg), pause(3))

    def send_tile(self, A: np.ndarray, B: np.ndarray) -> None:
        """A: [rows, K], B: [K, cols]."""
        K = A.shape[1]
        for k in range(K):
            self.a.send_nowait({"data": [int(v) for v in A[:, k]], "last": int(k == K - 1)})
            self.b.send_nowait([int(v) for v in B[k]])

    async def recv_tile(self) -> np.ndarray:
        rows = []
        for i in range(self.cfg.rows):
            beat = await self.o.recv()
            assert beat.last == (i == self.cfg.rows - 1), f"last flag wrong on row {i}"
            rows.append(list(beat.data))
        return np.array(rows, dtype=np.int64)


def _ranges(cfg):
    return (-(1 << (cfg.abits - 1)), 1 << (cfg.abits - 1),
            -(1 << (cfg.wbits - 1)), 1 << (cfg.wbits - 1))


async def _check_tiles(tb, tiles):
    for A, B in tiles:
        tb.send_tile(A, B)
    for n, (A, B) in enumerate(tiles):
        got = await tb.recv_tile()
        want = A.astype(np.int64) @ B.astype(np.int64)
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)[0]
            raise AssertionError(f"tile {n} (K={A.shape[1]}): C{tuple(bad)} = {got[tuple(bad)]},"
                                 f" expected {want[tuple(bad)]}")
    return len(tiles)


@cocotb.test()
async def random_tiles(dut):
    """Random tiles, K from 1 to kmax (biased to small K and to the spacing boundary)."""
    cfg = _config()
    tb = ArrayTB(dut, cfg, stall=0.3)
    await tb.reset()
    rng = np.random.default_rng(SEED)
    alo, ahi, wlo, whi = _ranges(cfg)
    ks = [1, 1, 2, cfg.tile_spacing - 1, cfg.tile_spacing, cfg.tile_spacing + 1, cfg.kmax]
    ks += [int(k) for k in rng.integers(1, min(cfg.kmax, 4 * cfg.tile_spacing) + 1, 24)]
    ks = [max(1, min(k, cfg.kmax)) for k in ks]
    rng.shuffle(ks)
    tiles = [(rng.integers(alo, ahi, (cfg.rows, k)), rng.integers(wlo, whi, (k, cfg.cols)))
             for k in ks]
    n = await _check_tiles(tb, tiles)
    dut._log.info(f"random_tiles: {n} tiles, {sum(ks) * cfg.pes} MACs checked, bit-exact")


@cocotb.test()
async def edge_values(dut):
    """Extremes at the largest K: min*min (the accumulator's worst case), max*min, zeros."""
    cfg = _config()
    tb = ArrayTB(dut, cfg, stall=0.0)
    await tb.reset()
    alo, ahi, wlo, whi = _ranges(cfg)
    K, R, C = cfg.kmax, cfg.rows, cfg.cols
    full = lambda v, shape: np.full(shape, v, dtype=np.int64)  # noqa: E731
    checker = np.indices((R, K)).sum(0) % 2
    tiles = [
        (full(alo, (R, K)), full(wlo, (K, C))),
        (full(ahi - 1, (R, K)), full(wlo, (K, C))),
        (full(alo, (R, K)), full(whi - 1, (K, C))),
        (full(0, (R, 1)), full(wlo, (1, C))),
        (np.where(checker, alo, ahi - 1), full(wlo, (K, C))),
        (full(alo, (R, 1)), full(wlo, (1, C))),
    ]
    n = await _check_tiles(tb, tiles)
    dut._log.info(f"edge_values: {n} tiles at K={K}, bit-exact")


async def gemm(tb: ArrayTB, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A @ B`` on the array: M and N padded to the array and tiled by the driver, all of K
    accumulated in the array."""
    cfg = tb.cfg
    (M, K), N = A.shape, B.shape[1]
    Mp, Np = -(-M // cfg.rows) * cfg.rows, -(-N // cfg.cols) * cfg.cols
    Ap = np.zeros((Mp, K), np.int64)
    Ap[:M] = A
    Bp = np.zeros((K, Np), np.int64)
    Bp[:, :N] = B
    order = [(i, j) for i in range(0, Mp, cfg.rows) for j in range(0, Np, cfg.cols)]
    for i, j in order:
        tb.send_tile(Ap[i:i + cfg.rows], Bp[:, j:j + cfg.cols])
    Cp = np.zeros((Mp, Np), np.int64)
    for i, j in order:
        Cp[i:i + cfg.rows, j:j + cfg.cols] = await tb.recv_tile()
    return Cp[:M, :N]


@cocotb.test()
async def tiled_gemm(dut):
    """A GEMM larger than the array, with M and N not multiples of it."""
    cfg = _config()
    tb = ArrayTB(dut, cfg, stall=0.1)
    await tb.reset()
    rng = np.random.default_rng(SEED + 7)
    alo, ahi, wlo, whi = _ranges(cfg)
    M, N, K = 2 * cfg.rows + 1, 2 * cfg.cols - 1, min(cfg.kmax, 3 * cfg.tile_spacing + 5)
    A = rng.integers(alo, ahi, (M, K))
    B = rng.integers(wlo, whi, (K, N))
    assert np.array_equal(await gemm(tb, A, B), A @ B), "tiled GEMM mismatch"
    dut._log.info(f"tiled_gemm: {M}x{K} @ {K}x{N}, bit-exact")


@cocotb.test()
async def utilisation(dut):
    """Stall-free M=N=K GEMMs: useful MAC cycles / (cycles x PEs), from first beat in to last
    row out. Prints ``UTIL ...`` lines for the benchmark (measured, never asserted)."""
    cfg = _config()
    sizes = [int(s) for s in os.environ.get("DYAD_UTIL_SIZES", "32").split(",") if s]
    rng = np.random.default_rng(SEED)
    alo, ahi, wlo, whi = _ranges(cfg)
    tb = ArrayTB(dut, cfg, stall=0.0)
    await tb.reset()
    for size in sizes:
        K = min(size, cfg.kmax)
        A = rng.integers(alo, ahi, (size, K))
        B = rng.integers(wlo, whi, (K, size))
        start = tb.o.cycles
        C = await gemm(tb, A, B)
        cycles = tb.o.last_cycle - start
        assert np.array_equal(C, A @ B)
        ideal = size * size * K / cfg.pes
        print(f"UTIL array={cfg.rows}x{cfg.cols} size={size} cycles={cycles} "
              f"ideal={ideal:.0f} util={ideal / cycles:.4f}", flush=True)
