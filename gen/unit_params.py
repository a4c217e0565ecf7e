"""Run-time parameters of the vector units for one layer, from the compile-time helpers of
:mod:`gen.intops` (``hw/`` defines the layouts, ``gen/`` computes what goes in them).

Each function returns a value for the unit's ``params`` port (``params_layout().const(value)``)
and raises ``ValueError`` when a layer's constants do not fit the unit's fixed widths.
"""
from __future__ import annotations

from hw import gelu as gelu_hw
from hw import shiftgelu as shiftgelu_hw
from hw import softmax as softmax_hw

from . import intops

__all__ = ["gelu", "gelu_from", "shiftgelu", "shiftmax"]


def gelu_from(k: intops.GeluPoly) -> dict:
    """A :class:`gen.intops.GeluPoly` as the ``dyad`` GELU unit's ``params``."""
    if k.guard != gelu_hw.GUARD:
        raise ValueError(f"guard bits {k.guard} != {gelu_hw.GUARD}")
    if k.segments > gelu_hw.SEGMENTS or k.frac_bits > gelu_hw.MAX_FRAC_BITS or k.seg_shift > 31:
        raise ValueError(f"GELU constants out of range: {k.segments} segments, frac_bits "
                         f"{k.frac_bits}, seg_shift {k.seg_shift}")
    pad = [0] * (gelu_hw.SEGMENTS - k.segments)
    coefs = {n: list(getattr(k, n)) + pad for n in ("c0", "c1", "c2")}
    if max(abs(c) for v in coefs.values() for c in v) >= 1 << (gelu_hw.COEF_BITS - 1):
        raise ValueError(f"GELU coefficient does not fit {gelu_hw.COEF_BITS} bits")
    return {"seg_shift": k.seg_shift, "frac_bits": k.frac_bits, "segments": k.segments,
            **coefs}


def gelu(scale: float, in_bits: int) -> dict:
    """``dyad`` GELU unit parameters for input scale ``scale``."""
    return gelu_from(intops.ct_gelu_poly(scale, in_bits))


def shiftgelu(scale: float) -> dict:
    """``ivit`` ShiftGELU unit parameters (``x0`` of ``1.702 * scale``)."""
    x0 = intops.ct_shift_exp_x0(1.702 * scale)
    if -x0 >= shiftgelu_hw.X0_LIMIT:
        raise ValueError(f"scale {scale!r} too small for the ShiftGELU unit (x0 = {x0}, need "
                         f"|x0| < {shiftgelu_hw.X0_LIMIT})")
    return {"x0": x0}


def shiftmax(mode: str, scale: float, row_len: int, out_bits: int) -> dict:
    """Shiftmax unit parameters for a layer (``dyad`` depends on the row length)."""
    if mode == "ivit":
        return {"x0": intops.ct_shift_exp_x0(scale), "out_bits": out_bits}
    k = intops.ct_exp2_poly(scale)
    if k.frac_bits != softmax_hw.DYAD_FRAC or k.guard != softmax_hw.DYAD_GUARD:
        raise ValueError("exp2 constants do not match the hardware's fixed widths")
    return {"mul": k.mul, "mul_shift": k.mul_shift, "c0": k.c0, "c1": k.c1, "c2": k.c2,
            "recip_bits": intops.ct_shiftmax_recip_bits(row_len, out_bits),
            "out_bits": out_bits}
