"""Post-training quantization: float spec + weights + sample inputs -> :class:`IntModel`.

Symmetric, zero-point-free, static (INTEGER_OPS.md section 1): weights per output channel at
``wbits`` (8 or 4), biases int32 at ``S_x * S_w[c]``, activations per tensor at 8 or 16 bits chosen
by an :class:`ActPolicy`, scales calibrated as absmax (or a percentile) of the float model's
activations on sample inputs. Every requantisation becomes a dyadic pair ``(m, e)`` (per channel
after a linear layer or a LayerNorm). LayerNorm gamma/beta are folded into the following
per-channel requant with beta added before the rounding shift (always in ``dyad`` mode; in ``ivit``
mode only where the reference's ``bias_int`` would overflow int32 or gamma is zero).

All float arithmetic of Dyad happens here and in the ``ct_*`` helpers of :mod:`gen.intops`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import intops
from .model import TransformerSpec, check_params, forward

__all__ = ["ActPolicy", "IntModel", "quantize_model", "calibrate", "PROBS_BITS"]

BIAS_FRAC_BITS = 16         # folded LayerNorm beta: fraction bits below the output LSB
PROBS_BITS = 16             # Shiftmax output (I-ViT ViT/DeiT: IntSoftmax(16), scale 2^-15);
                            # 8 (scale 2^-7) lets P @ V run on an 8-bit-activation array
ACT_WIDTHS = (8, 16)

# default activation width by role (the last component of a tensor name)
_VIT_BITS = {"input": 8, "embed": 16, "ln1": 8, "ln2": 8, "q": 8, "k": 8, "v": 8, "scores": 8,
             "probs": PROBS_BITS,
             "ctx": 8, "attn_res": 16, "fc1": 8, "gelu": 8, "mlp_res": 16, "final_ln": 8,
             "logits": 16}
# BERT-family models need 16 bits on the residual stream, LN outputs and the GELU path (section 12)
_BERT_BITS = {"embed": 16, "embed_ln": 16, "ln1": 16, "ln2": 16, "q": 8, "k": 8, "v": 8,
              "probs": PROBS_BITS,
              "scores": 8, "ctx": 8, "attn_res": 16, "fc1": 16, "gelu": 16, "mlp_res": 16,
              "logits": 16}


@dataclass(frozen=True)
class ActPolicy:
    """Activation width per tensor: defaults by role and model kind, ``overrides`` by role
    (``"fc1"``) or full name (``"layers.1.fc1"``); the full name wins. Widths are 8 or 16."""
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        for k, v in self.overrides.items():
            if v not in ACT_WIDTHS:
                raise ValueError(f"activation width for {k!r} must be 8 or 16, not {v!r}")

    def bits(self, kind: str, name: str) -> int:
        role = name.rsplit(".", 1)[-1]
        if name in self.overrides:
            return self.overrides[name]
        if role in self.overrides:
            return self.overrides[role]
        table = _VIT_BITS if kind == "vit" else _BERT_BITS
        if role not in table:
            raise KeyError(f"no activation width for tensor {name!r}")
        return table[role]


# --------------------------------------------------------------------------------------------------
# the integer model

@dataclass
class IntModel:
    """Everything the golden model, the compiler and the hardware need, and nothing float at RT.

    ``tensors``: integer arrays by name — ``<linear>.w`` (weights ``[N, K]``), ``<linear>.b``
    (int32 bias), ``<out>.m``/``<out>.e`` (the requant producing activation ``<out>``),
    ``<out>.bias`` (pre-shift bias of a folded LayerNorm), ``<out>.res_m``/``res_e`` (residual term
    of an add), embedding tables. ``scales`` and ``bits``: per activation tensor (CT information,
    also what the nonlinear ops derive their constants from). ``folded``: LayerNorms whose
    gamma/beta live in the next requant. """
    spec: TransformerSpec
    mode: str
    wbits: int
    mbits: int
    tensors: dict
    scales: dict
    bits: dict
    folded: list

    def save(self, path) -> Path:
        """Write ``<path>.npz`` (integers) and ``<path>.json`` (spec, mode, scales, widths)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path.with_suffix(".npz"), **self.tensors)
        meta = {"format": "dyad-intmodel-1", "spec": self.spec.to_dict(), "mode": self.mode,
                "wbits": self.wbits, "mbits": self.mbits, "scales": self.scales,
                "bits": self.bits, "folded": self.folded}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "IntModel":
        path = Path(path)
        js, npz = path.with_suffix(".json"), path.with_suffix(".npz")
        for f in (js, npz):
            if not f.is_file():
                raise FileNotFoundError(f"IntModel file not found: {f}")
        meta = json.loads(js.read_text())
        if meta.get("format") != "dyad-intmodel-1":
            raise ValueError(f"{js}: not a Dyad IntModel (format {meta.get('format')!r})")
        with np.load(npz) as z:
            tensors = {k: z[k] for k in z.files}
        return cls(TransformerSpec.from_dict(meta["spec"]), meta["mode"], meta["wbits"],
                   meta["mbits"], tensors, meta["scales"], meta["bits"], meta["folded"])

    def act(self, name: str) -> tuple[int, float]:
        return self.bits[name], self.scales[name]


# --------------------------------------------------------------------------------------------------
# calibration

def calibrate(spec, params, samples, *, token_types=None, percentile: float | None = None,
              batch: int = 256) -> dict[str, float]:
    """Absmax (or the given percentile of |x|) of every traced float activation over ``samples``."""
    stats: dict[str, list] = {}
    for i in range(0, len(samples), batch):
        trace: dict = {}
        tt = None if token_types is None else token_types[i:i + batch]
        forward(spec, params, samples[i:i + batch], token_types=tt, trace=trace)
        for k, v in trace.items():
            a = np.abs(v)
            stats.setdefault(k, []).append(
                float(a.max()) if percentile is None else float(np.percentile(a, percentile)))
    return {k: max(v) for k, v in stats.items()}


# --------------------------------------------------------------------------------------------------
# quantization

class _Builder:
    def __init__(self, spec, params, ranges, mode, wbits, mbits, policy):
        self.spec, self.P, self.ranges = spec, params, ranges
        self.mode, self.wbits, self.mbits, self.policy = mode, wbits, mbits, policy
        self.t: dict = {}
        self.scales: dict = {}
        self.bits: dict = {}
        self.folded: list = []

    # activations -----------------------------------------------------------------------------
    def act(self, name: str, bits: int | None = None) -> float:
        bits = bits or self.policy.bits(self.spec.kind, name)
        r = self.ranges.get(name)
        if r is None:
            raise KeyError(f"no calibration range for {name!r}")
        scale = max(r, 1e-8) / ((1 << (bits - 1)) - 1)
        self.scales[name], self.bits[name] = scale, bits
        return scale

    def _mbits_for(self, in_bound: float) -> int:
        """Mantissa width keeping ``|x| * m`` below 2^62 for ``|x| <= in_bound``."""
        return max(8, min(self.mbits, 62 - math.ceil(math.log2(max(in_bound, 2)))))

    def requant(self, out: str, M, in_bound: float, prefix: str = ""):
        m, e = intops.dyadic(np.asarray(M, np.float64), self._mbits_for(in_bound))
        self.t[f"{out}.{prefix}m"], self.t[f"{out}.{prefix}e"] = m, e
        return m, e

    # parameters ------------------------------------------------------------------------------
    def linear(self, name: str, in_name: str) -> tuple[np.ndarray, float]:
        """Quantise ``<name>.weight/.bias``; returns the accumulator scale per channel and a
        bound."""
        W = np.asarray(self.P[name + ".weight"], np.float64)
        b = np.asarray(self.P[name + ".bias"], np.float64)
        qmax = (1 << (self.wbits - 1)) - 1
        s_w = np.maximum(np.abs(W).max(axis=1), 1e-8) / qmax
        s_acc = self.scales[in_name] * s_w
        self.t[name + ".w"] = intops.quantize(W, s_w[:, None], self.wbits).astype(np.int8)
        self.t[name + ".b"] = intops.quantize(b, s_acc, 32).astype(np.int32)
        k = W.shape[1]
        bound = (2 ** (self.bits[in_name] - 1)) * (qmax + 1) * k + 2 ** 31
        return s_acc, bound

    def linear_requant(self, name: str, in_name: str, out: str):
        s_acc, bound = self.linear(name, in_name)
        self.requant(out, s_acc / self.act(out), bound)

    def linear_add(self, name: str, in_name: str, res: str, out: str):
        """``out = requant(linear(in)) + requant(res)``, each term rounded on its own."""
        s_acc, bound = self.linear(name, in_name)
        s_out = self.act(out)
        self.requant(out, s_acc / s_out, bound)
        self.requant(out, self.scales[res] / s_out, 2 ** 16, "res_")

    def layernorm(self, ln: str, in_name: str, out: str):
        """LayerNorm ``ln`` of ``in_name`` requantised (per channel) to ``out``."""
        g = np.asarray(self.P[ln + ".weight"], np.float64)
        beta = np.asarray(self.P[ln + ".bias"], np.float64)
        C = g.shape[0]
        s_n = math.sqrt(C) / 2.0 ** intops.LN_SCALE_BITS
        s_out = self.act(out)
        fold = self.mode == "dyad"
        if not fold:
            try:
                self.t[out + ".ln_bias"] = intops.ct_layernorm_bias(g, beta, C)
            except ValueError:
                fold = True
        m, e = self.requant(out, s_n * g / s_out, 2 ** 31 + 2 ** 31 * (not fold))
        if fold:
            # beta in output LSBs with BIAS_FRAC_BITS fraction bits, placed below the rounding
            # shift: the hardware stores the 32-bit value and shifts it by e - BIAS_FRAC_BITS
            e = np.where(m == 0, np.maximum(e, BIAS_FRAC_BITS), e)     # gamma ~ 0: any e works
            self.t[out + ".e"] = e
            if int(np.min(e)) < BIAS_FRAC_BITS:
                raise ValueError(f"{out}: requant shift {int(np.min(e))} below {BIAS_FRAC_BITS}")
            frac = np.floor(beta / s_out * 2.0 ** BIAS_FRAC_BITS + 0.5).astype(np.int64)
            if np.abs(frac).max() >= 1 << 31:
                raise ValueError(f"{out}: folded LayerNorm beta does not fit 32 bits")
            self.folded.append(out)
            self.t[out + ".bias"] = frac << (e - BIAS_FRAC_BITS)

    # model -----------------------------------------------------------------------------------
    def build(self) -> IntModel:
        s, P = self.spec, self.P
        if s.kind == "vit":
            self.act("input")
            s_acc, bound = self.linear("embed.patch", "input")
            s_e = self.act("embed")
            self.requant("embed", s_acc / s_e, bound)
            pos = np.asarray(P["embed.pos"], np.float64)
            s_pos = max(np.abs(pos[1:]).max(), 1e-8) / 32767
            self.t["embed.pos"] = intops.quantize(pos[1:], s_pos, 16)
            self.requant("embed", s_pos / s_e, 2 ** 16, "res_")
            cls_row = np.asarray(P["embed.cls"], np.float64) + pos[0]
            self.t["embed.cls"] = intops.quantize(cls_row, s_e, 16)
            x = "embed"
        else:
            s_e = self.act("embed")
            for tab in ("word", "pos", "type"):
                W = np.asarray(P["embed." + tab], np.float64)
                s_t = max(np.abs(W).max(), 1e-8) / 127
                self.t[f"embed.{tab}"] = intops.quantize(W, s_t, 8).astype(np.int8)
                self.requant("embed", s_t / s_e, 128, tab + "_")
            self.layernorm("embed.ln", "embed", "embed_ln")
            x = "embed_ln"
        for i in range(s.depth):
            x = self.layer(f"layers.{i}.", x)
        if s.kind == "vit":
            self.layernorm("final_ln", x, "final_ln")
            x = "final_ln"
        if s.num_classes:
            self.linear_requant("head", x, "logits")
        return IntModel(s, self.mode, self.wbits, self.mbits, self.t, self.scales, self.bits,
                        self.folded)

    def layer(self, p: str, x: str) -> str:
        s = self.spec
        if s.pre_ln:
            self.layernorm(p + "ln1", x, p + "ln1")
            a_in = p + "ln1"
        else:
            a_in = x
        for n in ("q", "k", "v"):
            self.linear_requant(p + n, a_in, p + n)
        s_sc = self.act(p + "scores")
        acc_bound = 2 ** 14 * s.head_dim
        self.requant(p + "scores", self.scales[p + "q"] * self.scales[p + "k"]
                     / math.sqrt(s.head_dim) / s_sc, acc_bound)
        b_p = self.policy.bits(s.kind, p + "probs")
        self.scales[p + "probs"], self.bits[p + "probs"] = 2.0 ** -(b_p - 1), b_p
        s_ctx = self.act(p + "ctx")
        self.requant(p + "ctx", self.scales[p + "probs"] * self.scales[p + "v"] / s_ctx,
                     2 ** (b_p - 1) * 128)
        self.linear_add(p + "proj", p + "ctx", x, p + "attn_res")
        if s.pre_ln:
            self.layernorm(p + "ln2", p + "attn_res", p + "ln2")
            m_in, res = p + "ln2", p + "attn_res"
        else:
            self.layernorm(p + "ln1", p + "attn_res", p + "ln1")
            m_in = res = p + "ln1"
        self.linear_requant(p + "fc1", m_in, p + "fc1")
        b_fc1, s_fc1 = self.bits[p + "fc1"], self.scales[p + "fc1"]
        if self.mode == "ivit":
            s_raw, raw_bound = s_fc1 * 2.0 ** -7, 2 ** (b_fc1 - 1) * 128
        else:
            k = intops.ct_gelu_poly(s_fc1, b_fc1)
            s_raw, raw_bound = s_fc1 / 2.0 ** k.frac_bits, 2 ** (b_fc1 - 1 + k.frac_bits)
        self.requant(p + "gelu", s_raw / self.act(p + "gelu"), raw_bound)
        self.linear_add(p + "fc2", p + "gelu", res, p + "mlp_res")
        if s.pre_ln:
            return p + "mlp_res"
        self.layernorm(p + "ln2", p + "mlp_res", p + "ln2")
        return p + "ln2"


def quantize_model(spec: TransformerSpec, params: dict, samples, *, mode: str = "dyad",
                   wbits: int = 8, mbits: int = 31, policy: ActPolicy | None = None,
                   token_types=None, percentile: float | None = None) -> IntModel:
    """Calibrate on ``samples`` (images or token ids) and quantise. ``mode``: ``ivit`` or
    ``dyad``."""
    if mode not in intops.MODES:
        raise ValueError(f"mode must be one of {intops.MODES}, not {mode!r}")
    if wbits not in (4, 8):
        raise ValueError(f"wbits must be 4 or 8, not {wbits!r}")
    if not isinstance(mbits, int) or not 8 <= mbits <= 31:
        raise ValueError(f"mbits must be an integer in [8, 31], not {mbits!r}")
    check_params(spec, params)
    if len(samples) == 0:
        raise ValueError("samples must not be empty (calibration needs data)")
    ranges = calibrate(spec, params, samples, token_types=token_types, percentile=percentile)
    return _Builder(spec, params, ranges, mode, wbits, mbits, policy or ActPolicy()).build()

