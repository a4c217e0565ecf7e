"""cocotb bench: the requantizer against :func:`gen.intops.requant` / ``requant_sum``, bit for bit.

Vectors: realistic multipliers (outputs mostly in range), saturating ones, negative mantissas,
per-channel mixtures, folded-LayerNorm pre-shift biases, residual adds, the extremes of every
field (largest accumulators and mantissas, e = 1 and e = 62), and random stalls on both streams.
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np

from gen import intops
from hw.config import AcceleratorConfig
from hw.requant import BIAS_FRAC_BITS, RES_BITS, in_layout, out_layout
from sim.streams import TB, StreamSink, StreamSource, random_pauses

SEED = int(os.environ.get("DYAD_SEED", "1"))


def _config() -> AcceleratorConfig:
    return AcceleratorConfig.from_dict(json.loads(os.environ["DYAD_CONFIG"]))


def expected(beat: dict) -> np.ndarray:
    """The golden result of one beat, through the public intops functions."""
    lanes = beat["lane"]
    f = {k: np.array([ln[k] for ln in lanes], np.int64) for k in lanes[0]}
    x = f["x"] + f["b"]
    bias = f["c"] << np.maximum(f["e"] - BIAS_FRAC_BITS, 0)
    bits = 16 if beat["wide"] else 8
    if not beat["residual"]:
        return intops.requant(x, f["m"], f["e"], bits, bias=bias)
    # requant_sum with a pre-shift bias on the first term: round each term, add, clamp
    first = intops.requant(x, f["m"], f["e"], 32, bias=bias)
    second = intops.requant(f["r"], f["rm"], f["re"], 32)
    return np.clip(first + second, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def vectors(cfg: AcceleratorConfig, n: int, rng) -> list[dict]:
    L, mb = cfg.requant_lanes, cfg.mbits
    acc_lo, acc_hi = -(1 << (cfg.acc_bits - 1)), 1 << (cfg.acc_bits - 1)
    # golden int64 limit: |x + b| * |m| + |bias| < 2^63
    x_lim = min(acc_hi, 1 << (62 - mb - 1))
    beats = []
    for k in range(n):
        kind = k % 6
        x = rng.integers(max(acc_lo, -x_lim), x_lim, L)
        b = rng.integers(-(1 << 20), 1 << 20, L) if kind != 4 else np.zeros(L, np.int64)
        target = 2.0 ** (15 if kind % 2 else 7)
        # multipliers that land the output in range (kinds 0-3) or saturate it (kind 5)
        M = target / np.maximum(np.abs(x + b), 1) * rng.uniform(0.02, 0.6, L)
        if kind == 5:
            M *= 1e3
        M = np.clip(M, 2.0 ** -60, 2.0 ** (mb - 2)) * rng.choice([-1, 1], L)
        m, e = intops.dyadic(M, mb)
        c = np.zeros(L, np.int64)
        if kind in (2, 3):   # folded LayerNorm beta (up to a quarter of the range): e >= 16
            e = np.maximum(e, BIAS_FRAC_BITS)
            lim = int(target) << (BIAS_FRAC_BITS - 2)
            c = rng.integers(-lim, lim, L)
        r = rng.integers(-(1 << (RES_BITS - 1)), 1 << (RES_BITS - 1), L)
        rm, re = intops.dyadic(rng.uniform(0.01, 0.35, L) * target / 2.0 ** (RES_BITS - 1), mb)
        beats.append({"lane": [{"x": int(x[i]), "b": int(b[i]), "m": int(m[i]), "e": int(e[i]),
                                "c": int(c[i]), "r": int(r[i]), "rm": int(rm[i]),
                                "re": int(re[i])} for i in range(L)],
                      "wide": int(kind % 2), "residual": int(kind in (1, 3, 4)),
                      "last": int(k == n - 1)})
    # extremes: largest accumulator magnitudes, largest mantissa, e = 1 and e = 62
    big = (1 << mb) - 1
    for x, m, e in ((x_lim - 1, 1, 1), (-x_lim, 1, 1), (x_lim - 1, big, 62), (-x_lim, -big, 62),
                    (0, big, 1), (-1, 1, 1), (1, 1, 1), (x_lim - 1, -big, 40)):
        beats.append({"lane": [{"x": x, "b": 0, "m": m, "e": e, "c": 0, "r": -(1 << 15),
                                "rm": big, "re": 62}] * L,
                      "wide": 1, "residual": 1, "last": 0})
    # the clamp bounds of both widths, met and crossed by one, with and without the residual
    # term: x = 2y with m = 1, e = 1 gives y exactly; r = 2, rm = 1, re = 1 adds 1
    for bound in (127, 255, (1 << 15) - 1, (1 << 16) - 1):
        for y in (bound, bound + 1, -bound - 1, -bound - 2):
            for wide in (0, 1):
                for residual in (0, 1):
                    beats.append({"lane": [{"x": 2 * (y - residual), "b": 0, "m": 1, "e": 1,
                                            "c": 0, "r": 2, "rm": 1, "re": 1}] * L,
                                  "wide": wide, "residual": residual, "last": 0})
    return beats


@cocotb.test()
async def requant_vectors(dut):
    cfg = _config()
    tb = TB(dut)
    src = StreamSource(dut, "i", dut.clk, in_layout(cfg), random_pauses(0.3, SEED))
    sink = StreamSink(dut, "o", dut.clk, out_layout(cfg), random_pauses(0.3, SEED + 1))
    await tb.reset()
    beats = vectors(cfg, int(os.environ.get("DYAD_VECTORS", "600")), np.random.default_rng(SEED))
    for bt in beats:
        src.send_nowait(bt)
    checked = 0
    for n, bt in enumerate(beats):
        got = await sink.recv()
        want = expected(bt)
        g = np.array(list(got.data), np.int64)
        if not np.array_equal(g, want):
            lane = int(np.argwhere(g != want)[0][0])
            raise AssertionError(f"beat {n} lane {lane}: got {g[lane]}, expected {want[lane]} "
                                 f"({bt['lane'][lane]}, wide={bt['wide']}, "
                                 f"residual={bt['residual']})")
        assert got.last == bt["last"]
        checked += cfg.requant_lanes
    dut._log.info(f"requant: {checked} elements in {len(beats)} beats, bit-exact")


@cocotb.test()
async def requant_throughput(dut):
    """Stall-free: one beat per cycle once the pipeline is full (printed, not asserted)."""
    cfg = _config()
    tb = TB(dut)
    src = StreamSource(dut, "i", dut.clk, in_layout(cfg))
    sink = StreamSink(dut, "o", dut.clk, out_layout(cfg))
    await tb.reset()
    beats = vectors(cfg, 200, np.random.default_rng(SEED + 5))
    for bt in beats:
        src.send_nowait(bt)
    for _ in beats:
        await sink.recv()
    span = sink.last_cycle - sink.first_cycle + 1
    print(f"THROUGHPUT requant lanes={cfg.requant_lanes} beats={len(beats)} cycles={span} "
          f"elements/cycle={len(beats) * cfg.requant_lanes / span:.2f}", flush=True)
