"""Error of every integer operator against float, on the settings of INTEGER_OPS.md section 10.

``python -m gen ops-error`` prints the table; the tests call the same measurement functions and hold
each result to its documented tolerance. Inputs are exactly quantised (the float reference is
evaluated on ``q * S``), so the figures are the operators' own error, not the input rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import intops
from .model import gelu

SEED = 20240601


@dataclass(frozen=True)
class Err:
    max: float
    mean: float
    note: str = ""


def _err(a, b, note: str = "") -> Err:
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return Err(float(d.max()), float(d.mean()), note)


def _softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------

def requant_vs_rational(samples: int = 20000, mbits: int = 31) -> Err:
    """Mismatches of :func:`intops.requant` against exact rational half-up rounding of x*m/2^e
    (``max`` = mismatch count), and ``mean`` = mean |error| in LSB against the ideal real x*M."""
    rng = np.random.default_rng(SEED)
    x = rng.integers(-(1 << 31), 1 << 31, samples)
    M = np.exp(rng.uniform(math.log(1e-7), math.log(0.99), samples))
    m, e = intops.dyadic(M, mbits)
    y = intops.requant(x, m, e, 32)
    bad = 0
    for xi, mi, ei, yi in zip(x.tolist(), m.tolist(), e.tolist(), y.tolist()):
        exact = Fraction(xi * mi, 1 << ei) + Fraction(1, 2)
        if math.floor(exact) != yi:
            bad += 1
    lsb = np.abs(y - x * M)
    return Err(float(bad), float(lsb.mean()), f"max {lsb.max():.2f} LSB vs real x*M")


def requant_vs_real(samples: int = 20000, mbits: int = 31, out_bits: int = 32) -> Err:
    """Dyadic requant of int32 inputs vs the ideal real ``x*M``, in output LSB; ``M`` is drawn so
    that ``|x*M|`` fits ``out_bits`` (the accuracy of the multiplier relative to the output)."""
    rng = np.random.default_rng(SEED)
    x = rng.integers(-(1 << 31), 1 << 31, samples)
    hi = np.minimum(0.99, 2.0 ** (out_bits - 1) / np.maximum(np.abs(x), 1))
    M = np.exp(rng.uniform(math.log(1e-7), np.log(np.maximum(hi, 2e-7)), samples))
    m, e = intops.dyadic(M, mbits)
    return _err(intops.requant(x, m, e, 32), x * M)


def residual_add(samples: int = 20000) -> Err:
    """Two separately rounded branches summed to 16 bits vs the exact real sum, in LSB."""
    rng = np.random.default_rng(SEED)
    x1 = rng.integers(-(1 << 20), 1 << 20, samples)
    x2 = rng.integers(-(1 << 15), 1 << 15, samples)
    M1, M2 = 0.0123, 0.37
    m1, e1 = intops.dyadic(M1)
    m2, e2 = intops.dyadic(M2)
    y = intops.requant_sum([(x1, m1, e1), (x2, m2, e2)], 16)
    return _err(y, x1 * M1 + x2 * M2)


def shift_exp(scale: float) -> Err:
    x0 = intops.ct_shift_exp_x0(scale)
    q = np.arange(-math.ceil(10.0 / scale), 1)
    e = intops.shift_exp(q, x0, 15)
    return _err(e * scale / 2 ** 15, np.exp(q * scale))


def _logit_rows(sigma: float, length: int, rows: int, bits: int):
    rng = np.random.default_rng(SEED)
    x = rng.normal(0.0, sigma, (rows, length))
    scale = np.abs(x).max() / ((1 << (bits - 1)) - 1)
    q = np.rint(x / scale).astype(np.int64)
    return q, scale


def shiftmax(sigma: float, out_bits: int = 16, mode: str = "ivit", length: int = 197,
             rows: int = 64) -> Err:
    q, scale = _logit_rows(sigma, length, rows, 8)
    p, s_out = intops.shiftmax(q, scale, out_bits=out_bits, mode=mode)
    sums = (p * s_out).sum(-1)
    r = _err(p * s_out, _softmax(q * scale))
    return Err(r.max, r.mean, f"row sums {sums.min():.4f}..{sums.max():.4f}")


def shiftmax_row_sum_min(sigma: float, mode: str, out_bits: int = 16) -> float:
    q, scale = _logit_rows(sigma, 197, 64, 8)
    p, s_out = intops.shiftmax(q, scale, out_bits=out_bits, mode=mode)
    return float((p * s_out).sum(-1).min())


def _gelu_grid(R: float, bits: int = 8):
    scale = R / ((1 << (bits - 1)) - 1)
    q = np.arange(-(1 << (bits - 1)) + 1, 1 << (bits - 1))[None, :]   # one row spanning [-R, R]
    return q, scale


def shift_gelu(R: float, mode: str = "ivit") -> Err:
    q, scale = _gelu_grid(R)
    y, s = intops.shift_gelu(q, scale, mode=mode, **({"in_bits": 8} if mode == "dyad" else {}))
    return _err(y * s, gelu(q * scale))


def dyad_gelu_on_4(bits: int = 8, R: float = 4.0) -> Err:
    """``dyad`` GELU over the whole input range ``[-R, R]`` (target <= 0.01 on [-4, 4])."""
    q, scale = _gelu_grid(R, bits)
    y, s = intops.gelu_poly(q, scale, in_bits=bits)
    return _err(y * s, gelu(q * scale))


def i_exp(scale: float) -> Err:
    q = np.arange(-math.ceil(10.0 / scale), 1)
    e, s = intops.i_exp(q, scale)
    return _err(e * s, np.exp(q * scale))


def i_softmax(sigma: float, length: int = 128, rows: int = 64) -> Err:
    q, scale = _logit_rows(sigma, length, rows, 16)
    p, s_out = intops.i_softmax(q, scale, out_bits=8)
    return _err(p * s_out, _softmax(q * scale))


def i_gelu(scale: float, form: str = "code") -> Err:
    q = np.arange(-math.floor(4.0 / scale), math.floor(4.0 / scale) + 1)
    y, s = intops.i_gelu(q, scale, form=form)
    return _err(y * s, gelu(q * scale))


def layernorm(C: int, mode: str, rows: int = 256) -> Err:
    """Normalised output ``out * S_n`` vs ``(x - mean) / sigma`` for 16-bit Gaussian rows."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(0.0, 1.0, (rows, C)) * rng.uniform(0.5, 2.0, (rows, 1)) + rng.normal(
        0, 0.5, (rows, 1))
    scale = np.abs(x).max() / 32767
    q = np.rint(x / scale).astype(np.int64)
    out, s_n = intops.layernorm_normalize(q, mode=mode)
    xf = q * scale
    ref = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True)
    return _err(out * s_n, ref)


def isqrt_exact(mode: str = "dyad", exhaustive: int = 1 << 20, random: int = 200000,
                top_bits: int = 62) -> Err:
    """Mismatches against Python's exact ``math.isqrt`` (max = mismatch count)."""
    n = np.arange(exhaustive, dtype=np.int64)
    rng = np.random.default_rng(SEED)
    n = np.concatenate([n, rng.integers(0, 1 << top_bits, random, dtype=np.int64)])
    got = intops.isqrt(n, mode=mode)
    want = np.array([math.isqrt(v) for v in n.tolist()], np.int64)
    bad = int((got != want).sum())
    return Err(float(bad), float(bad) / len(n), f"{len(n)} inputs < 2^{top_bits}")


def isqrt_ivit_window() -> Err:
    """Worst ratio of the I-ViT 10-step root to the exact root, inside 2^16..2^45 and outside."""
    inside = np.unique(np.geomspace(1 << 16, (1 << 45) - 1, 4000).astype(np.int64))
    outside = np.array([1, 2, 1 << 7, 1 << 50, 1 << 62 - 1], np.int64)
    ok = intops.isqrt(inside, mode="ivit") - np.array([math.isqrt(v) for v in inside.tolist()])
    bad = intops.isqrt(outside, mode="ivit") / np.maximum(
        [math.isqrt(v) for v in outside.tolist()], 1)
    return Err(float(np.abs(ok).max()), float(np.abs(ok).mean()),
               f"outside the window up to {bad.max():.0f}x the true root")


# --------------------------------------------------------------------------------------------------

def table():
    """Rows ``(op, setting, Err)`` of the section 10 table plus the ``dyad`` operators."""
    rows = [
        ("dyadic requant (31-bit m, half-up)", "int32 x, M in [1e-7,0.99]: mismatches vs rational",
         requant_vs_rational()),
        ("dyadic requant (31-bit m)", "vs ideal x*M (LSB)", requant_vs_real()),
        ("dyadic requant (31-bit m)", "16-bit outputs, vs ideal x*M (LSB)",
         requant_vs_real(out_bits=16)),
        ("dyadic requant (18-bit m)", "16-bit outputs, vs ideal x*M (LSB)",
         requant_vs_real(mbits=18, out_bits=16)),
        ("residual add", "16-bit out (LSB)", residual_add()),
    ]
    for S in (0.2, 0.0787, 0.02, 0.005):
        rows.append(("shift_exp (n=15) vs exp", f"S = {S}", shift_exp(S)))
    for mode in ("ivit", "dyad"):
        for bits in (16, 8):
            for sg in (1, 3, 8):
                rows.append((f"Shiftmax {mode} k_out={bits}", f"L=197, sigma={sg}",
                             shiftmax(sg, bits, mode)))
    for R in (4, 8, 10):
        rows.append(("ShiftGELU ivit (code) vs GELU", f"8-bit, R={R}", shift_gelu(R, "ivit")))
    for R in (2, 4, 8, 10):
        rows.append(("GELU dyad (piecewise quadratic)", f"8-bit, R={R}", shift_gelu(R, "dyad")))
    rows.append(("GELU dyad", "16-bit input, R=8", dyad_gelu_on_4(16, 8.0)))
    for S in (0.1, 0.01, 0.001):
        rows.append(("i-exp (I-BERT code) vs exp", f"S = {S}", i_exp(S)))
    for sg in (1, 3, 8):
        rows.append(("I-BERT IntSoftmax (8-bit out)", f"L=128, sigma={sg}", i_softmax(sg)))
    for S in (1e-3, 1e-4):
        rows.append(("i-GELU (code) vs GELU on [-4,4]", f"S = {S}", i_gelu(S)))
    rows.append(("i-GELU (code), 8-bit input", "S = 0.031 (invalid regime)", i_gelu(4 / 127)))
    for S in (4 / 127, 1e-3):
        rows.append(("i-GELU (paper form)", f"S = {S:.3g}", i_gelu(S, "paper")))
    for mode in ("ivit", "dyad"):
        for C in (384, 768):
            rows.append((f"LayerNorm {mode} (normalised) vs float", f"C={C}, 16-bit in",
                         layernorm(C, mode)))
    rows.append(("isqrt dyad (digit by digit)", "0..2^20 exhaustive + random < 2^62: mismatches",
                 isqrt_exact("dyad")))
    rows.append(("isqrt ivit (10 Newton steps)", "2^16 <= n < 2^45, error vs floor(sqrt)",
                 isqrt_ivit_window()))
    return rows


def main() -> int:
    print(f"{'operator':40s} {'setting':52s} {'max err':>10s} {'mean err':>10s}  note")
    for op, setting, r in table():
        print(f"{op:40s} {setting:52s} {r.max:10.3g} {r.mean:10.3g}  {r.note}", flush=True)
    return 0
