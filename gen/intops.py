"""Integer operator library: the golden definition of every Dyad operator.

Integers in, integers out, computed in int64 numpy. Floats appear only in the ``ct_*`` helpers and
:func:`dyadic`, which turn real scales into integer constants once, at compile time (CT). The
run-time (RT) part of every operator uses only integer adds, multiplies, shifts, compares and
divisions, so the hardware can reproduce it bit for bit. The algorithms and constants are those of
``shared/INTEGER_OPS.md``; section numbers below refer to it.

Two numeric modes:

``ivit``
    The I-ViT reference code (zkkli/I-ViT) bit for bit: Shiftmax with n=15 and a ``2^31-1``
    reciprocal, ShiftGELU with its row max and per-element division, LayerNorm with 10 fixed Newton
    steps.
``dyad``
    Ours (section 11): Shiftmax with a compile-time reciprocal width, an element-wise
    piecewise-quadratic GELU without division, exact integer square root, exactly rounded LayerNorm
    mean.

The I-BERT code forms (:func:`i_exp`, :func:`i_softmax`, :func:`i_gelu`) are provided for reference
and error measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MODES", "dyadic", "requant", "requant_sum", "round_half_even_div",
    "ct_shift_exp_x0", "shift_exp", "Exp2Poly", "ct_exp2_poly", "exp2_poly", "shiftmax",
    "ct_shiftmax_recip_bits",
    "shift_gelu", "GeluPoly", "ct_gelu_poly", "gelu_poly",
    "isqrt", "layernorm_normalize", "layernorm", "ct_layernorm_bias", "LN_SCALE_BITS",
    "i_exp", "i_softmax", "i_gelu", "quantize",
]

MODES = ("ivit", "dyad")
INT64_LIMIT = 1 << 63
LN_SCALE_BITS = 30          # LayerNorm output: (y * ((2^31 - 1) // std)) >> 1  ~  y / std * 2^30


# --------------------------------------------------------------------------------------------------
# argument checking

def _ints(x, name: str) -> np.ndarray:
    """Return ``x`` as an int64 array, refusing anything that is not integer-valued by type."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer array, not a bool")
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, not {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= INT64_LIMIT:
        raise ValueError(f"{name} has values that do not fit int64")
    return arr.astype(np.int64, copy=False)


def _scale(scale, name: str = "scale") -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, not {scale!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, not {scale!r}")
    return value


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    return mode


def _bits(bits, name: str = "bits", lo: int = 2, hi: int = 32) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not lo <= bits <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {bits!r}")
    return int(bits)


def _absmax(x: np.ndarray) -> int:
    return int(np.max(np.abs(x))) if x.size else 0


def _check_product(name: str, a: np.ndarray, b: np.ndarray, extra: int = 0) -> None:
    """Raise if ``|a*b| + extra`` could reach 2^63 (the int64 product would wrap)."""
    if _absmax(a) * _absmax(b) + extra >= INT64_LIMIT:
        raise ValueError(f"{name}: product of {_absmax(a)} and {_absmax(b)} overflows int64")


def _clamp_signed(x: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(x, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def quantize(x, scale, bits: int) -> np.ndarray:
    """Float -> int at the model boundary (section 1.2): round half to even, clamp to signed
    bits."""
    scale = np.asarray(scale, dtype=np.float64)
    if np.any(~np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError("scale must be finite and > 0")
    bits = _bits(bits)
    q = np.rint(np.asarray(x, dtype=np.float64) / scale)
    return _clamp_signed(q, bits).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# section 3: dyadic requantisation

def dyadic(M, mbits: int = 31):
    """Split real multipliers ``M`` into ``(m, e)`` with ``M ~ m / 2^e`` (CT).

    ``m = floor(mant * 2^mbits + 1/2)`` (half up) with ``|M| = mant * 2^E``, ``mant in [0.5, 1)``,
    and ``e = mbits - E``; when rounding gives ``m = 2^mbits`` it is renormalised to ``(2^(mbits-1),
    e-1)``. ``m`` carries the sign of ``M`` (negative LayerNorm gamma gives negative multipliers).
    ``M = 0`` gives ``(0, 1)``. Multipliers so small that ``e > 62`` become ``(0, 1)`` too: they
    round every input of up to ``2^(62-mbits)`` to zero anyway. ``|M| >= 2^(mbits-1)`` (``e < 1``)
    is refused. Returns int64 arrays (0-d for scalar input).
    """
    mbits = _bits(mbits, "mbits", 2, 31)
    Mf = np.asarray(M, dtype=np.float64)
    m, e = _dyadic_unbounded(Mf, mbits)
    zero = (m == 0) | (e > 62)
    m = np.where(zero, 0, m)
    e = np.where(zero, 1, e)
    if np.any(e < 1):
        raise ValueError(f"M too large for a {mbits}-bit dyadic multiplier: max |M| = "
                         f"{float(np.max(np.abs(Mf)))!r} (need < 2^{mbits - 1})")
    m = np.where(Mf < 0, -m, m)
    return m, e


def _round_shift(x, m, e, bias=None) -> np.ndarray:
    """``(x*m + bias + 2^(e-1)) >> e``, validated, unclamped."""
    x = _ints(x, "x")
    m = _ints(m, "m")
    e = _ints(e, "e")
    if e.size and (int(e.min()) < 1 or int(e.max()) > 62):
        raise ValueError(f"e must be in [1, 62], got [{int(e.min())}, {int(e.max())}]")
    b = np.zeros((), np.int64) if bias is None else _ints(bias, "bias")
    _check_product("requant x*m", x, m, _absmax(b))
    return _round_half_up_shift(x * m + b, e)


def _round_half_up_shift(v: np.ndarray, s) -> np.ndarray:
    """``floor(v / 2^s + 1/2)`` for ``s >= 1`` as ``((v >> (s-1)) + 1) >> 1``: no rounding constant
    to overflow, and shifts of 63 or more are well defined (``v >> 63`` is the sign)."""
    return ((v >> np.minimum(s - 1, 63)) + 1) >> 1


def _dyadic_unbounded(Mf: np.ndarray, mbits: int):
    """``(|m|, e)`` of :func:`dyadic` without the range limits on ``e``."""
    if not np.all(np.isfinite(Mf)):
        raise ValueError("M must be finite")
    mant, E = np.frexp(np.abs(Mf))
    m = np.floor(mant * float(1 << mbits) + 0.5).astype(np.int64)
    e = (mbits - E).astype(np.int64)
    top = m == (1 << mbits)
    return np.where(top, m >> 1, m), np.where(top, e - 1, e)


def requant(x, m, e, bits: int, *, bias=None) -> np.ndarray:
    """Dyadic requantisation ``clamp((x*m + bias + 2^(e-1)) >> e)`` to signed ``bits``.

    ``m``, ``e`` (and the optional pre-shift ``bias``, at scale ``S_out / 2^e``) broadcast against
    ``x``: scalars per tensor, or vectors along the last axis per channel. Rounding is half up.
    """
    bits = _bits(bits)
    return _clamp_signed(_round_shift(x, m, e, bias), bits)


def requant_sum(terms, bits: int) -> np.ndarray:
    """Residual add (section 3): ``clamp(sum_i round(x_i * m_i / 2^e_i))``, each term rounded on
    its own.

    ``terms`` is a sequence of ``(x, m, e)``; all ``x`` broadcast to one shape.
    """
    bits = _bits(bits)
    if not terms:
        raise ValueError("terms must not be empty")
    total = sum(_round_shift(x, m, e) for x, m, e in terms)
    return _clamp_signed(total, bits)


def round_half_even_div(num, den: int) -> np.ndarray:
    """Exact ``round_half_even(num / den)`` for integer ``num`` and a positive integer ``den``."""
    num = _ints(num, "num")
    if not isinstance(den, (int, np.integer)) or den <= 0:
        raise ValueError(f"den must be a positive integer, not {den!r}")
    q, r = np.divmod(num, den)
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up


# --------------------------------------------------------------------------------------------------
# section 4.1-4.2: shift exponential and Shiftmax

def ct_shift_exp_x0(scale) -> int:
    """CT constant ``x0 = floor(-1/S)`` (negative): the integer of real -1."""
    return int(math.floor(-1.0 / _scale(scale)))


def shift_exp(x, x0: int, n: int) -> np.ndarray:
    """I-ViT ``int_exp_shift`` (section 4.1): ``e * S/2^n ~ exp(x*S)`` for ``x <= 0``.

    Positive ``x`` is accepted as the reference code accepts it (ShiftGELU of an all-negative row):
    the result then grows past ``|x0| * 2^n`` and is saturated at ``2^40``, which is beyond every
    sum clamp the callers apply, so callers stay bit-exact with the reference.
    """
    x = _ints(x, "x")
    if x0 >= 0:
        raise ValueError(f"x0 must be negative, not {x0}")
    xp = x + (x >> 1) - (x >> 4)
    xp = np.maximum(xp, n * x0)
    q = xp // x0
    r = xp - q * x0
    shift = n - q
    big = shift > 40
    e = ((r - 2 * x0) << np.where(big, 0, shift)) >> 1
    return np.where(big, np.int64(1) << 40, np.minimum(e, np.int64(1) << 40))


@dataclass(frozen=True)
class Exp2Poly:
    """CT constants of the ``dyad`` exponential (no division, no float at RT).

    ``v = (x * mul) >> mul_shift`` is ``x * S * log2(e)`` with ``frac_bits`` fraction bits;
    ``k = -(v >> frac_bits)`` octaves, ``t = v & (2^frac_bits - 1)``;
    ``P(t) = c0 + ((c1 + ((c2 * t) >> frac_bits)) * t >> frac_bits) ~ 2^(t / 2^frac_bits + guard)``;
    ``e = P(t) >> k`` (0 beyond ``guard + 1`` octaves). ``e * 2^-guard ~ exp(x * S)``.
    """
    mul: int
    mul_shift: int
    frac_bits: int
    guard: int
    c0: int
    c1: int
    c2: int


EXP2_GUARD = 16
EXP2_FRAC_BITS = 12
EXP2_MUL_BITS = 17


def ct_exp2_poly(scale, guard: int = EXP2_GUARD, frac_bits: int = EXP2_FRAC_BITS) -> Exp2Poly:
    """Fit the ``dyad`` exponential constants for input scale ``S`` (CT)."""
    scale = _scale(scale)
    real = scale * math.log2(math.e) * 2.0 ** frac_bits
    mul_shift = EXP2_MUL_BITS - 1 - math.floor(math.log2(real))
    if mul_shift < 0:
        raise ValueError(f"scale {scale!r} too large for the dyad exponential")
    mul = int(round(real * 2.0 ** mul_shift))
    t = np.arange(1 << frac_bits, dtype=np.float64)
    u = t / (1 << frac_bits)
    p2, p1, p0 = np.polyfit(u, 2.0 ** u * 2.0 ** guard, 2)
    return Exp2Poly(mul, mul_shift, frac_bits, guard, int(round(p0)), int(round(p1)),
                    int(round(p2)))


def exp2_poly(x, k: Exp2Poly) -> np.ndarray:
    """``dyad`` exponential of ``x <= 0`` (see :class:`Exp2Poly`); result ``< 2^(guard + 1)``."""
    x = _ints(x, "x")
    v = (x * k.mul) >> k.mul_shift
    octave = -(v >> k.frac_bits)
    t = v & ((1 << k.frac_bits) - 1)
    P = k.c0 + (((k.c1 + ((k.c2 * t) >> k.frac_bits)) * t) >> k.frac_bits)
    return np.where(octave > k.guard, 0, P >> np.minimum(octave, 63))


def ct_shiftmax_recip_bits(row_len: int, out_bits: int, guard: int = EXP2_GUARD) -> int:
    """``dyad`` Shiftmax reciprocal width: ``M = bits(row sum) + out_bits + 1`` (at most 62)."""
    need = guard + 1 + math.ceil(math.log2(max(row_len, 1))) + out_bits + 1
    if need > 62:
        raise ValueError(f"row length {row_len} too long for a {out_bits}-bit dyad Shiftmax")
    return need


def shiftmax(q, scale, *, out_bits: int = 16, mode: str = "ivit", axis: int = -1):
    """Shiftmax (section 4.2): integer softmax along ``axis``.

    Returns ``(p, out_scale)`` with ``p`` in ``[0, 2^(out_bits-1) - 1]`` and ``out_scale =
    2^-(out_bits-1)``. ``ivit``: the reference code — shift exponential (n=15), sum clamped to
    ``2^31 - 1``, ``f = (2^31 - 1) // s``, ``p = (e * f) >> (32 - out_bits)``. ``dyad``: the
    division-free :func:`exp2_poly` exponential, ``f = (2^M - 1) // s`` with ``M`` from
    :func:`ct_shiftmax_recip_bits`, ``p`` rounded half up and clamped.
    """
    q = _ints(q, "q")
    scale = _scale(scale)
    out_bits = _bits(out_bits, "out_bits", 2, 16)
    mode = _mode(mode)
    if q.ndim == 0 or q.shape[axis] == 0:
        raise ValueError("q must have a non-empty reduction axis")
    x = q - q.max(axis=axis, keepdims=True)
    if mode == "ivit":
        e = shift_exp(x, ct_shift_exp_x0(scale), 15)
        s = np.minimum(e.sum(axis=axis, keepdims=True), (1 << 31) - 1)
        f = ((1 << 31) - 1) // s
        return (e * f) >> (32 - out_bits), 2.0 ** -(out_bits - 1)
    e = exp2_poly(x, ct_exp2_poly(scale))
    M = ct_shiftmax_recip_bits(q.shape[axis], out_bits)
    f = ((1 << M) - 1) // e.sum(axis=axis, keepdims=True)
    _check_product("shiftmax e*f", e, f)
    p = _round_half_up_shift(e * f, M + 1 - out_bits)
    return np.minimum(p, (1 << (out_bits - 1)) - 1), 2.0 ** -(out_bits - 1)


# --------------------------------------------------------------------------------------------------
# section 4.3: GELU

def shift_gelu(q, scale, *, mode: str = "ivit", **dyad_options):
    """GELU. ``ivit``: the I-ViT ShiftGELU code (section 4.3); ``dyad``: :func:`gelu_poly`.

    ``ivit`` returns ``(y, S * 2^-7)`` with ``|y| <= 128 * 127`` for 8-bit ``q``; the row max is
    taken over the last axis, as in the reference. ``dyad`` returns ``(y, S / 2^frac_bits)``.
    """
    mode = _mode(mode)
    if mode == "dyad":
        return gelu_poly(q, scale, **dyad_options)
    if dyad_options:
        raise TypeError(f"unexpected options for ivit shift_gelu: {sorted(dyad_options)}")
    q = _ints(q, "q")
    scale = _scale(scale)
    if q.ndim == 0 or q.shape[-1] == 0:
        raise ValueError("q must have a non-empty last axis")
    n = 23
    x0 = ct_shift_exp_x0(1.702 * scale)
    c = q.max(axis=-1, keepdims=True)
    e1 = shift_exp(q - c, x0, n)
    e2 = shift_exp(-c, x0, n)
    s = np.minimum(e1 + e2, (1 << 31) - 1)
    f = ((1 << 31) - 1) // s
    sig = (e1 * f) >> 24
    return q * sig, scale * 2.0 ** -7


@dataclass(frozen=True)
class GeluPoly:
    """CT constants of the ``dyad`` GELU: ``GELU(x) = relu(x) - g(|x|)``, ``g(a) = a * Phi(-a)``.

    ``g`` is approximated on ``|q|`` in ``segments`` segments of ``2^seg_shift`` integers each by a
    quadratic ``c0 + ((c1 + ((c2 * t) >> seg_shift)) * t >> seg_shift)`` with ``t`` the offset in
    the segment, all at scale ``S / 2^(frac_bits + guard)``; ``g = 0`` from
    ``segments << seg_shift`` on.
    """
    seg_shift: int
    frac_bits: int
    guard: int
    c0: tuple
    c1: tuple
    c2: tuple

    @property
    def segments(self) -> int:
        return len(self.c0)


GELU_SEGMENTS = 16
GELU_CUTOFF = 5.5       # g(5.5) = 1.1e-7: below half an LSB of every output scale we generate
GELU_GUARD = 4


def _g(a: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr  # CT only
    return a * ndtr(-a)


def ct_gelu_poly(scale, in_bits: int = 16, frac_bits: int | None = None) -> GeluPoly:
    """Fit the ``dyad`` GELU constants for input scale ``S`` (CT).

    ``frac_bits`` defaults to the smallest value with ``S / 2^frac_bits <= 2^-10``.
    """
    scale = _scale(scale)
    in_bits = _bits(in_bits, "in_bits", 2, 32)
    if frac_bits is None:
        frac_bits = max(0, math.ceil(math.log2(scale) + 10))
    frac_bits = _bits(frac_bits, "frac_bits", 0, 24)
    reach = min(1 << (in_bits - 1), math.ceil(GELU_CUTOFF / scale))
    seg_shift = max(0, math.ceil(math.log2(reach / GELU_SEGMENTS)))
    width = 1 << seg_shift
    nseg = -(-reach // width)
    unit = scale / 2 ** (frac_bits + GELU_GUARD)
    c0, c1, c2 = [], [], []
    for s in range(nseg):
        t = np.arange(width, dtype=np.float64)
        u = t / width
        target = _g((s * width + t) * scale) / unit
        if width >= 3:
            p2, p1, p0 = np.polyfit(u, target, 2)
        else:
            p2, p1, p0 = 0.0, (target[-1] - target[0]) if width == 2 else 0.0, target[0]
        c0.append(int(round(p0)))
        c1.append(int(round(p1)))
        c2.append(int(round(p2)))
    return GeluPoly(seg_shift, frac_bits, GELU_GUARD, tuple(c0), tuple(c1), tuple(c2))


def gelu_poly(q, scale, *, in_bits: int = 16, frac_bits: int | None = None,
              consts: GeluPoly | None = None):
    """``dyad`` GELU: element-wise, no row reduction, no division (section 11).

    ``y = (relu(q) << frac_bits) - round(g(|q|))``, ``g`` piecewise quadratic (:class:`GeluPoly`).
    Returns ``(y, S / 2^frac_bits)``; ``|y| < 2^(in_bits - 1 + frac_bits)``.
    """
    q = _ints(q, "q")
    scale = _scale(scale)
    k = consts if consts is not None else ct_gelu_poly(scale, in_bits, frac_bits)
    a = np.abs(q)
    seg = a >> k.seg_shift
    inside = seg < k.segments
    idx = np.where(inside, seg, 0)
    t = a & ((1 << k.seg_shift) - 1)
    c0 = np.asarray(k.c0, np.int64)[idx]
    c1 = np.asarray(k.c1, np.int64)[idx]
    c2 = np.asarray(k.c2, np.int64)[idx]
    g = c0 + (((c1 + ((c2 * t) >> k.seg_shift)) * t) >> k.seg_shift)
    g = np.where(inside, (g + (1 << (k.guard - 1))) >> k.guard, 0)
    y = (np.maximum(q, 0) << k.frac_bits) - g
    return y, scale / 2.0 ** k.frac_bits


# --------------------------------------------------------------------------------------------------
# sections 4.4 and 5.5: integer square root and LayerNorm

def isqrt(n, *, mode: str = "dyad") -> np.ndarray:
    """Integer square root. ``dyad``: exact ``floor(sqrt(n))`` (digit by digit, for all ``n <
    2^62``).

    ``ivit``: the I-ViT code, 10 Newton steps from ``2^16`` — correct only for ``2^16 <= n < 2^45``.
    """
    n = _ints(n, "n")
    mode = _mode(mode)
    if n.size and int(n.min()) < 0:
        raise ValueError("n must be non-negative")
    if mode == "ivit":
        k = np.full(n.shape, 1 << 16, np.int64)
        for _ in range(10):
            k = (k + n // k) >> 1
        return k
    if n.size and int(n.max()) >= 1 << 62:
        raise ValueError("n must be < 2^62")
    rem = n.copy()
    root = np.zeros_like(n)
    bit = np.int64(1) << 60
    while bit:
        trial = root + bit
        take = rem >= trial
        rem = np.where(take, rem - trial, rem)
        root = np.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


def layernorm_normalize(q, *, mode: str = "ivit"):
    """Integer normalisation over the last axis (section 4.4), without gamma and beta.

    ``out = (y * ((2^31 - 1) // std)) >> 1`` with ``y = x - mean``, ``std = isqrt(sum y^2)``;
    ``out * sqrt(C) / 2^30 ~ (x - mean) / sigma``. Returns ``(out, sqrt(C) / 2^30)``.
    ``ivit`` rounds the mean half to even and uses the 10-step Newton root; ``dyad`` the same exact
    mean, the exact root, and treats a zero ``std`` (constant row) as 1 (the output is then 0).
    """
    q = _ints(q, "q")
    mode = _mode(mode)
    if q.ndim == 0 or q.shape[-1] == 0:
        raise ValueError("q must have a non-empty last axis")
    C = q.shape[-1]
    mean = round_half_even_div(q.sum(axis=-1, keepdims=True), C)
    y = q - mean
    _check_product("layernorm y^2", y, y)
    var = (y * y).sum(axis=-1, keepdims=True)
    if mode == "dyad" and var.size and int(var.max()) >= 1 << 62:
        raise ValueError("layernorm variance overflows: input too wide for C")
    std = np.maximum(isqrt(var, mode=mode), 1)
    f = ((1 << 31) - 1) // std
    out = (y * f) >> 1
    return out, math.sqrt(C) / 2.0 ** LN_SCALE_BITS


def ct_layernorm_bias(gamma, beta, C: int) -> np.ndarray:
    """CT ``bias_int = floor((beta/gamma) / S_n)``; ``ValueError`` if it does not fit int32."""
    gamma = np.asarray(gamma, np.float64)
    beta = np.asarray(beta, np.float64)
    if np.any(gamma == 0):
        raise ValueError("gamma has zero entries: fold gamma/beta into the next requant instead")
    s_n = math.sqrt(C) / 2.0 ** LN_SCALE_BITS
    b = np.floor(beta / gamma / s_n)
    if np.any(np.abs(b) >= 2 ** 31):
        raise ValueError(f"layernorm bias_int overflows int32 (max |beta/gamma| = "
                         f"{float(np.max(np.abs(beta / gamma))):.3g}): fold into the next requant")
    return b.astype(np.int64)


def layernorm(q, gamma, beta, *, mode: str = "ivit"):
    """Integer LayerNorm (section 4.4): ``out = normalize(q) + bias_int``, ``out_scale = S_n *
    gamma``.

    Returns ``(out, out_scale)`` with ``out_scale`` per channel (shape ``(C,)``).
    """
    q = _ints(q, "q")
    gamma = np.asarray(gamma, np.float64)
    beta = np.asarray(beta, np.float64)
    if q.ndim == 0 or gamma.shape != (q.shape[-1],) or beta.shape != gamma.shape:
        raise ValueError(f"gamma and beta must have shape ({q.shape[-1] if q.ndim else '?'},), "
                         f"got {gamma.shape} and {beta.shape}")
    out, s_n = layernorm_normalize(q, mode=mode)
    return out + ct_layernorm_bias(gamma, beta, q.shape[-1]), s_n * gamma


# --------------------------------------------------------------------------------------------------
# section 5: I-BERT code forms

IBERT_EXP_N = 30
IBERT_EXP_COEF = (0.35815147, 0.96963238, 1.0)


def _i_exp_parts(q: np.ndarray, scale: float):
    """I-BERT ``int_exp`` before its final shift: ``e = z << (30 - k)``."""
    a, b, c = IBERT_EXP_COEF
    x0 = math.floor(-0.6931 / scale)
    b_int = math.floor((b / a) / scale)
    c_int = math.floor((c / a) / scale ** 2)
    if x0 >= 0:
        raise ValueError(f"scale {scale!r} too large for i_exp (x0 = {x0})")
    x = np.maximum(q, IBERT_EXP_N * x0)
    k = x // x0
    r = x - k * x0
    z = r * (r + b_int) + c_int
    if z.size and int(z.max()) >= 1 << 32:
        raise ValueError(f"scale {scale!r} too small for i_exp: polynomial exceeds 32 bits")
    return np.maximum(z, 0), k, c_int


def i_exp(q, scale):
    """I-BERT ``int_exp`` (section 5.2) for ``q <= 0``. Returns ``(e, a*S^2 / 2^30)``.

    ``e`` reaches ``c' * 2^30``: it overflows int64 once ``c' = floor(2.79/S^2) >= 2^33``.
    """
    q = _ints(q, "q")
    scale = _scale(scale)
    z, k, _ = _i_exp_parts(q, scale)
    _check_product("i_exp z << 30", z, np.int64(1 << IBERT_EXP_N))
    return z << (IBERT_EXP_N - k), IBERT_EXP_COEF[0] * scale ** 2 / 2.0 ** IBERT_EXP_N


def i_softmax(q, scale, *, out_bits: int = 8):
    """I-BERT ``IntSoftmax`` (section 5.3) over the last axis. Returns ``(p, 2^-out_bits)``.

    The 16-bit QuantAct on the exponentials is the requantisation that maps the largest exponential
    (``x = 0``, ``c' << 30``) to ``2^15 - 1``, which is what the reference's calibration converges
    to. It is computed fused, ``e16 = round(z * m / 2^(sh - 30 + k))``, which is bit-identical to
    requantising ``e = z << (30 - k)`` and keeps the product inside 63 bits.
    """
    q = _ints(q, "q")
    scale = _scale(scale)
    out_bits = _bits(out_bits, "out_bits", 2, 16)
    if q.ndim == 0 or q.shape[-1] == 0:
        raise ValueError("q must have a non-empty last axis")
    z, k, c_int = _i_exp_parts(q - q.max(axis=-1, keepdims=True), scale)
    m, sh = _dyadic_unbounded(np.float64(32767.0 / (c_int * 2.0 ** IBERT_EXP_N)), 31)
    shift = int(sh) - IBERT_EXP_N + k              # >= 16 for every legal scale
    e16 = _clamp_signed(_round_half_up_shift(z * m, shift), 16)
    s = e16.sum(axis=-1, keepdims=True)
    f = (1 << 32) // s
    p = (e16 * f) >> (32 - out_bits)
    return p, 2.0 ** -out_bits


def i_gelu(q, scale, *, form: str = "code"):
    """I-BERT ``IntGELU`` (section 5.4). Returns ``(y, S * S_erf / 2)`` (a negative scale).

    ``form="code"``: the reference code (``k = 1.4142``, extra ``>> 14``; valid only for ``S <<
    0.02``). ``form="paper"``: Alg. 2 of the paper (exact sqrt(2), no extra shift).
    """
    q = _ints(q, "q")
    scale = _scale(scale)
    if form not in ("code", "paper"):
        raise ValueError(f"form must be 'code' or 'paper', not {form!r}")
    a, b, c = -0.2888, -1.769, 1.0
    s_e = scale / (1.4142 if form == "code" else math.sqrt(2.0))
    b_int = math.floor(b / s_e)
    c_int = math.floor((c / a) / s_e ** 2)
    sign = np.sign(q)
    t = np.minimum(np.abs(q), -b_int)
    y = sign * ((t + b_int) ** 2 + c_int)
    s_erf = s_e ** 2 * a
    if form == "code":
        y = y >> 14
        s_erf *= 2.0 ** 14
    one = math.floor(1.0 / s_erf)
    _check_product("i_gelu x*(y+1)", q, y + one)
    return q * (y + one), scale * s_erf / 2
