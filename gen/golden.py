"""Integer-only forward pass of an :class:`~gen.quantize.IntModel`: the bit-exact reference.

Only integer operations of :mod:`gen.intops` run here. :func:`run` can return every intermediate
integer tensor by name (the names of :mod:`gen.model`, plus ``<name>.acc`` for raw accumulators and
``<name>.raw`` for LayerNorm/GELU outputs before their requant), so hardware can be compared layer
by layer and the first differing tensor named.
"""
from __future__ import annotations

import numpy as np

from . import intops
from .model import merge_heads, patchify, split_heads
from .quantize import IntModel

__all__ = ["run", "quantize_input", "predict", "first_mismatch"]


def quantize_input(model: IntModel, inputs) -> np.ndarray:
    """The model boundary (float -> int): ViT images -> int8 patches ``[B, patches, patch_dim]``.
    BERT inputs are token ids already and pass through."""
    if model.spec.kind == "bert":
        return np.asarray(inputs, np.int64)
    bits, scale = model.act("input")
    return intops.quantize(patchify(inputs, model.spec), scale, bits)


class _Run:
    def __init__(self, model: IntModel, trace: dict):
        self.m, self.T, self.trace = model, model.tensors, trace

    def keep(self, name, value):
        self.trace[name] = value
        return value

    def rq(self, name, x, prefix=""):
        return intops.requant(x, self.T[f"{name}.{prefix}m"], self.T[f"{name}.{prefix}e"],
                              self.m.bits[name])

    def linear(self, name, x, out):
        acc = x @ self.T[name + ".w"].astype(np.int64).T + self.T[name + ".b"].astype(np.int64)
        return self.keep(out + ".acc", acc)

    def linear_requant(self, name, x, out):
        return self.keep(out, self.rq(out, self.linear(name, x, out)))

    def linear_add(self, name, x, res, out):
        acc = self.linear(name, x, out)
        T = self.T
        y = intops.requant_sum([(acc, T[out + ".m"], T[out + ".e"]),
                                (res, T[out + ".res_m"], T[out + ".res_e"])], self.m.bits[out])
        return self.keep(out, y)

    def layernorm(self, x, out):
        raw, _ = intops.layernorm_normalize(x, mode=self.m.mode)
        if out in self.m.folded:
            self.keep(out + ".raw", raw)
            y = intops.requant(raw, self.T[out + ".m"], self.T[out + ".e"], self.m.bits[out],
                               bias=self.T[out + ".bias"])
        else:
            raw = self.keep(out + ".raw", raw + self.T[out + ".ln_bias"])
            y = self.rq(out, raw)
        return self.keep(out, y)

    def forward(self, x):
        s, T = self.m.spec, self.T
        if s.kind == "vit":
            acc = self.linear("embed.patch", x, "embed")
            pos = np.broadcast_to(T["embed.pos"], acc.shape)
            tok = intops.requant_sum([(acc, T["embed.m"], T["embed.e"]),
                                      (pos, T["embed.res_m"], T["embed.res_e"])],
                                     self.m.bits["embed"])
            cls = np.broadcast_to(T["embed.cls"], (tok.shape[0], 1, s.dim))
            h = self.keep("embed", np.concatenate([cls, tok], axis=1))
        else:
            ids, types = x
            terms = [(T["embed.word"].astype(np.int64)[ids], T["embed.word_m"], T["embed.word_e"]),
                     (T["embed.pos"].astype(np.int64)[: ids.shape[1]][None],
                      T["embed.pos_m"], T["embed.pos_e"]),
                     (T["embed.type"].astype(np.int64)[types], T["embed.type_m"],
                      T["embed.type_e"])]
            h = self.keep("embed", intops.requant_sum(terms, self.m.bits["embed"]))
            h = self.layernorm(h, "embed_ln")
        for i in range(s.depth):
            h = self.layer(f"layers.{i}.", h)
        if s.kind == "vit":
            h = self.layernorm(h, "final_ln")
        if not s.num_classes:
            return h
        return self.linear_requant("head", h[:, 0], "logits")

    def layer(self, p, x):
        s, m = self.m.spec, self.m
        a_in = self.layernorm(x, p + "ln1") if s.pre_ln else x
        q, k, v = (self.linear_requant(p + n, a_in, p + n) for n in ("q", "k", "v"))
        acc = self.keep(p + "scores.acc",
                        split_heads(q, s.heads) @ split_heads(k, s.heads).transpose(0, 1, 3, 2))
        scores = self.keep(p + "scores", self.rq(p + "scores", acc))
        probs, _ = intops.shiftmax(scores, m.scales[p + "scores"], out_bits=m.bits[p + "probs"],
                                   mode=m.mode)
        self.keep(p + "probs", probs)
        acc = self.keep(p + "ctx.acc", merge_heads(probs @ split_heads(v, s.heads)))
        ctx = self.keep(p + "ctx", self.rq(p + "ctx", acc))
        h = self.linear_add(p + "proj", ctx, x, p + "attn_res")
        if s.pre_ln:
            m_in, res = self.layernorm(h, p + "ln2"), h
        else:
            m_in = res = self.layernorm(h, p + "ln1")
        f = self.linear_requant(p + "fc1", m_in, p + "fc1")
        if m.mode == "ivit":
            g, _ = intops.shift_gelu(f, m.scales[p + "fc1"], mode="ivit")
        else:
            g, _ = intops.gelu_poly(f, m.scales[p + "fc1"], in_bits=m.bits[p + "fc1"])
        self.keep(p + "gelu.raw", g)
        g = self.keep(p + "gelu", self.rq(p + "gelu", g))
        out = self.linear_add(p + "fc2", g, res, p + "mlp_res")
        return out if s.pre_ln else self.layernorm(out, p + "ln2")


def run(model: IntModel, x, *, token_types=None, trace: dict | None = None) -> np.ndarray:
    """Integer forward. ``x``: int patches from :func:`quantize_input` (ViT) or token ids (BERT).

    Returns integer logits ``[B, classes]`` at scale ``model.scales['logits']`` (or the last hidden
    state). With ``trace`` (a dict), every intermediate integer tensor is stored in it by name.
    """
    x = intops._ints(x, "x")
    s = model.spec
    if s.kind == "vit":
        want = (s.num_patches, s.patch_dim)
        if x.ndim != 3 or x.shape[1:] != want:
            raise ValueError(f"x must have shape [B, {want[0]}, {want[1]}], got {x.shape}")
        arg = x
    else:
        if x.ndim != 2 or x.shape[1] != s.seq_len:
            raise ValueError(f"x must have shape [B, {s.seq_len}], got {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= s.vocab_size):
            raise ValueError(f"token ids must be in [0, {s.vocab_size})")
        types = np.zeros_like(x) if token_types is None else intops._ints(token_types,
                                                                         "token_types")
        arg = (x, types)
    return _Run(model, trace if trace is not None else {}).forward(arg)


def predict(model: IntModel, inputs, batch: int = 256) -> np.ndarray:
    """Float inputs -> class indices, integer-only after the input boundary."""
    out = []
    for i in range(0, len(inputs), batch):
        out.append(run(model, quantize_input(model, inputs[i:i + batch])).argmax(-1))
    return np.concatenate(out)


def first_mismatch(expected: dict, actual: dict) -> str | None:
    """Name of the first tensor (in ``expected``'s order) whose integers differ, or ``None``."""
    for name, want in expected.items():
        if name in actual and not np.array_equal(np.asarray(actual[name]), want):
            return name
    return None
