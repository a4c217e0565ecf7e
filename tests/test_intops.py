"""gen.intops: hand-computed cases, float tolerances, hardware-relevant bounds, input validation."""
import math

import numpy as np
import pytest

from gen import intops, ops_error

# --------------------------------------------------------------------------------------------------
# dyadic and requant

def test_dyadic_hand_cases():
    # 0.3 = 0.6 * 2^-1: m = floor(0.6 * 2^31 + 0.5) = 1288490189, e = 31 + 1
    assert intops.dyadic(0.3) == (1288490189, 32)
    assert intops.dyadic(0.5) == (1 << 30, 31)
    assert intops.dyadic(-0.25) == (-(1 << 30), 32)
    assert intops.dyadic(0.0) == (0, 1)
    m, e = intops.dyadic(0.3, mbits=8)       # 0.6 * 256 = 153.6 -> 154
    assert (m, e) == (154, 9)


def test_dyadic_renormalises_at_the_top():
    # mant just below 1 rounds up to 2^mbits: must become (2^(mbits-1), e-1)
    M = (1 - 2.0 ** -12) * 2.0 ** -3
    m, e = intops.dyadic(M, mbits=8)
    assert (m, e) == (128, 10)
    assert m / 2.0 ** e == pytest.approx(M, rel=2 ** -8)


def test_dyadic_refuses_large_multiplier():
    with pytest.raises(ValueError, match="M too large"):
        intops.dyadic(2.0 ** 31)
    with pytest.raises(ValueError, match="M must be finite"):
        intops.dyadic(float("nan"))


def test_requant_hand_cases():
    m, e = intops.dyadic(0.5)
    # round half up: 3 * 0.5 = 1.5 -> 2; -3 * 0.5 = -1.5 -> -1; clamp at 4 bits
    assert intops.requant(np.array([3, -3, 100, -100]), m, e, 4).tolist() == [2, -1, 7, -8]


def test_requant_per_channel_and_bias():
    x = np.array([[10, 10], [-10, -10]])
    m, e = intops.dyadic(np.array([0.5, 0.25]))
    assert intops.requant(x, m, e, 8).tolist() == [[5, 3], [-5, -2]]
    # pre-shift bias of +1.0 output LSB in channel 0
    bias = np.array([1 << int(e[0]), 0])
    assert intops.requant(x, m, e, 8, bias=bias).tolist() == [[6, 3], [-4, -2]]


def test_requant_matches_exact_rational():
    assert ops_error.requant_vs_rational(5000).max == 0


def test_requant_sum_rounds_each_branch():
    m, e = intops.dyadic(0.5)
    # 1*0.5 -> 1 and 1*0.5 -> 1 rounded separately: 2 (a single rounding would give 1)
    assert intops.requant_sum([(np.array([1]), m, e), (np.array([1]), m, e)], 8).tolist() == [2]
    assert ops_error.residual_add(5000).max <= 1.0


def test_requant_errors():
    with pytest.raises(TypeError, match="x must have an integer dtype"):
        intops.requant(np.array([1.5]), 1, 1, 8)
    with pytest.raises(ValueError, match="bits must be"):
        intops.requant(np.array([1]), 1, 1, 1)
    with pytest.raises(ValueError, match="e must be in"):
        intops.requant(np.array([1]), 1, 0, 8)
    with pytest.raises(ValueError, match="overflows int64"):
        intops.requant(np.array([1 << 40]), (1 << 31) - 1, 31, 8)


# --------------------------------------------------------------------------------------------------
# shift exponential and Shiftmax

def test_shift_exp_hand_case():
    # S = 0.25 -> x0 = -4. x = -3: xp = -3 + (-2) - (-1) = -4, q = 1, r = 0,
    # e = ((0 + 8) << 14) >> 1 = 65536  (65536 * 0.25 / 2^15 = 0.5 ~ exp(-0.75) = 0.47)
    x0 = intops.ct_shift_exp_x0(0.25)
    assert x0 == -4
    assert intops.shift_exp(np.array([-3, 0]), x0, 15).tolist() == [65536, 4 << 15]


def test_shiftmax_hand_case():
    # two equal logits: e = |x0| * 2^15 each, f = (2^31-1) // (2 e), p = e f >> 16
    p, s = intops.shiftmax(np.array([5, 5]), 0.25)
    e = 4 << 15
    f = ((1 << 31) - 1) // (2 * e)
    assert p.tolist() == [(e * f) >> 16] * 2 and s == 2.0 ** -15


@pytest.mark.parametrize("mode", ["ivit", "dyad"])
@pytest.mark.parametrize("out_bits", [2, 8, 16])
def test_shiftmax_never_exceeds_out_bits(mode, out_bits):
    rng = np.random.default_rng(1)
    rows = [rng.integers(-128, 128, (50, 197)),
            np.full((3, 197), 127), np.full((3, 197), -128),
            np.where(np.arange(197) == 7, 127, -128)[None].repeat(3, 0),
            np.array([[127]]), rng.integers(-128, 128, (4, 1024))]
    for q in rows:
        for scale in (1e-3, 0.03, 0.5, 3.0):
            p, _ = intops.shiftmax(q, scale, out_bits=out_bits, mode=mode)
            assert p.min() >= 0 and p.max() <= (1 << (out_bits - 1)) - 1


@pytest.mark.parametrize("sigma", [1, 3, 8])
def test_shiftmax_error(sigma):
    ivit = ops_error.shiftmax(sigma, 16, "ivit")
    dyad = ops_error.shiftmax(sigma, 16, "dyad")
    assert ivit.max < 0.07 and ivit.mean < 3e-4
    assert dyad.max <= 7.5e-3 and dyad.max <= ivit.max and dyad.mean <= ivit.mean
    assert ops_error.shiftmax_row_sum_min(sigma, "dyad") >= 0.995


def test_shiftmax_axis_and_errors():
    q = np.random.default_rng(0).integers(-50, 50, (4, 6))
    a, _ = intops.shiftmax(q, 0.1, axis=0)
    b, _ = intops.shiftmax(q.T, 0.1)
    assert np.array_equal(a, b.T)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        intops.shiftmax(q, 0.0)
    with pytest.raises(ValueError, match="out_bits must be"):
        intops.shiftmax(q, 0.1, out_bits=17)
    with pytest.raises(ValueError, match="mode must be one of"):
        intops.shiftmax(q, 0.1, mode="fp32")
    with pytest.raises(ValueError, match="non-empty"):
        intops.shiftmax(np.zeros((2, 0), np.int64), 0.1)


# --------------------------------------------------------------------------------------------------
# GELU

def test_shift_gelu_ivit_hand_case():
    # row max c = 0: e1 = e2 = |x0| * 2^23 at x = 0, sigma = (e1 * ((2^31-1) // (2 e1))) >> 24
    S = 0.1
    x0 = intops.ct_shift_exp_x0(1.702 * S)
    e1 = -x0 << 23
    sig0 = (e1 * (((1 << 31) - 1) // (2 * e1))) >> 24
    y, s = intops.shift_gelu(np.array([[0, -3]]), S)
    assert y[0, 0] == 0 and s == S / 128
    assert sig0 == 63                       # sigma(0) = 0.5 at scale 2^-7, floored


def test_shift_gelu_ivit_errors_match_reference_figures():
    # INTEGER_OPS.md section 10: 0.25 / 0.31 / 4.69 at R = 4 / 8 / 10
    for R, ref in ((4, 0.25), (8, 0.31), (10, 4.69)):
        assert ops_error.shift_gelu(R, "ivit").max == pytest.approx(ref, abs=0.01)


@pytest.mark.parametrize("bits", [8, 16])
def test_dyad_gelu_error(bits):
    assert ops_error.dyad_gelu_on_4(bits).max <= 0.01
    for R in (2, 8, 10):
        assert ops_error.dyad_gelu_on_4(bits, R).max <= 0.01


def test_dyad_gelu_hand_cases():
    S = 4 / 127
    y, s = intops.gelu_poly(np.array([0, 127, -127, 1000]), S, in_bits=16)
    assert y[0] == 0
    # large |x|: GELU(x) = x exactly (g rounds to 0), GELU(-x) = 0
    assert y[3] * s == pytest.approx(1000 * S)
    assert y[2] * s == pytest.approx(0.0, abs=2e-3)
    assert y[1] * s == pytest.approx(127 * S * 0.99997, abs=2e-3)


def test_dyad_gelu_no_overflow_at_extremes():
    for bits in (8, 16):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for S in (1e-4, 0.03, 1.0):
            y, s = intops.gelu_poly(np.array([lo, hi, 0, -1, 1]), S, in_bits=bits)
            k = intops.ct_gelu_poly(S, bits)
            assert np.abs(y).max() < 1 << (bits - 1 + k.frac_bits + 1)


# --------------------------------------------------------------------------------------------------
# isqrt and LayerNorm

def test_isqrt_exact_exhaustive_and_random():
    n = np.arange(1 << 20, dtype=np.int64)
    want = np.floor(np.sqrt(n)).astype(np.int64)
    assert np.array_equal(intops.isqrt(n), want)
    rng = np.random.default_rng(7)
    r = rng.integers(0, 1 << 47, 100000, dtype=np.int64)
    r = np.concatenate([r, [(1 << 47) - 1, (1 << 46), (1 << 62) - 1, 2 ** 40 - 1, 2 ** 40]])
    got = intops.isqrt(r)
    assert got.tolist() == [math.isqrt(v) for v in r.tolist()]


def test_isqrt_ivit_is_the_reference_newton():
    n = np.array([0, 1, 1 << 20, (1 << 20) - 1, 1 << 44])
    k = np.full(5, 1 << 16)
    for _ in range(10):
        k = (k + n // k) >> 1
    assert np.array_equal(intops.isqrt(n, mode="ivit"), k)
    assert intops.isqrt(np.array([1]), mode="ivit")[0] == 64     # not converged below 2^16
    assert ops_error.isqrt_ivit_window().max <= 1


def test_isqrt_errors():
    with pytest.raises(ValueError, match="non-negative"):
        intops.isqrt(np.array([-1]))
    with pytest.raises(TypeError, match="integer dtype"):
        intops.isqrt(np.array([4.0]))


def test_round_half_even_div():
    num = np.array([5, 7, -5, -7, 6, 3, -3])
    assert intops.round_half_even_div(num, 2).tolist() == [2, 4, -2, -4, 3, 2, -2]
    assert intops.round_half_even_div(np.array([10, 11]), 4).tolist() == [2, 3]


def test_layernorm_hand_case():
    # x = [1, 3]: mean 2, y = [-1, 1], var = 2, std = isqrt(2) = 1, f = 2^31 - 1,
    # out = (y * f) >> 1 = [-2^30, 2^30 - 1]
    out, s = intops.layernorm_normalize(np.array([[1, 3]]), mode="dyad")
    assert out.tolist() == [[-(1 << 30), (1 << 30) - 1]]
    assert s == math.sqrt(2) / 2 ** 30


@pytest.mark.parametrize("mode", ["ivit", "dyad"])
def test_layernorm_error(mode):
    assert ops_error.layernorm(384, mode).max <= 1.5e-3
    assert ops_error.layernorm(768, mode).max <= 1.5e-3


def test_layernorm_gamma_beta():
    rng = np.random.default_rng(3)
    q = rng.integers(-30000, 30000, (8, 64))
    g, b = rng.uniform(0.5, 2, 64), rng.uniform(-1, 1, 64)
    out, scale = intops.layernorm(q, g, b, mode="dyad")
    x = q.astype(float)
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) * g + b
    assert np.abs(out * scale - ref).max() < 1e-3
    assert scale.shape == (64,)


def test_layernorm_constant_row_and_errors():
    out, _ = intops.layernorm_normalize(np.full((2, 16), 77), mode="dyad")
    assert not out.any()
    out, _ = intops.layernorm_normalize(np.array([[5]]), mode="dyad")     # C = 1
    assert out.tolist() == [[0]]
    with pytest.raises(ValueError, match="gamma and beta must have shape"):
        intops.layernorm(np.zeros((2, 4), np.int64), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="overflows int32"):
        intops.layernorm(np.zeros((1, 4), np.int64), np.full(4, 1e-9), np.ones(4))


# --------------------------------------------------------------------------------------------------
# I-BERT code forms

def test_i_exp_and_softmax_errors():
    for S, tol in ((0.1, 4e-3), (0.01, 4.5e-3), (0.001, 2.5e-3)):
        assert ops_error.i_exp(S).max <= tol
    for sg in (1, 3, 8):
        assert ops_error.i_softmax(sg).max <= 0.06
    p, s = intops.i_softmax(np.array([[0, 0, 0, 0]]), 0.01)
    # e16 = 32767 each, f = 2^32 // 131068 = 32769, p = (32767 * 32769) >> 24 = (2^30 - 1) >> 24
    assert p.tolist() == [[63, 63, 63, 63]] and s == 2.0 ** -8


def test_i_gelu_errors():
    assert ops_error.i_gelu(1e-3).max == pytest.approx(0.022, abs=2e-3)
    assert ops_error.i_gelu(1e-4).max == pytest.approx(0.018, abs=2e-3)
    assert ops_error.i_gelu(4 / 127, "paper").max == pytest.approx(0.0176, abs=1e-3)
    assert ops_error.i_gelu(4 / 127).max > 1.0          # the documented invalid regime


def test_quantize_boundary():
    q = intops.quantize(np.array([0.5, 1.5, 2.5, -0.5, 1000.0]), 1.0, 8)
    assert q.tolist() == [0, 2, 2, 0, 127]              # half to even, clamp
    with pytest.raises(ValueError, match="scale"):
        intops.quantize(np.ones(2), 0.0, 8)


def test_bool_and_float_inputs_refused():
    with pytest.raises(TypeError, match="bool"):
        intops.shift_gelu(np.array([True]), 0.1)
    with pytest.raises(TypeError, match="integer dtype"):
        intops.i_exp(np.array([0.0]), 0.1)
