"""Transformer description and its float numpy forward pass.

:class:`TransformerSpec` describes a ViT (pre-LN, as in ``ViTModel``) or a BERT encoder (post-LN,
as in ``BertModel``). Weights are a flat ``dict[str, np.ndarray]`` with Dyad's canonical names
(:func:`param_shapes` lists them); :mod:`gen.checkpoint` maps Hugging Face names onto them.

The forward pass can record every intermediate tensor by name. The names are shared with the integer
golden model (:mod:`gen.golden`) so calibration, the golden trace and the hardware comparison all
talk about the same tensors:

``embed``                       the residual stream entering layer 0 (ViT: patches + cls + pos;
                                BERT: word + position + type embeddings, before the embedding LN)
``embed_ln``                    BERT only: the embedding LayerNorm output
``layers.{i}.ln1``/``ln2``      LayerNorm outputs (ViT: before attention / MLP; BERT: after)
``layers.{i}.q``/``k``/``v``    projections; ``scores`` = q k^T / sqrt(d_head); ``probs`` = softmax
``layers.{i}.ctx``              probs v, heads concatenated; ``attn_res`` = residual + projection
``layers.{i}.fc1``/``gelu``     MLP hidden before/after GELU; ``mlp_res`` = residual + fc2
``final_ln``                    ViT only: the final LayerNorm; ``logits`` = classifier output
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = ["TransformerSpec", "param_shapes", "forward", "gelu", "patchify", "DIGITS_SPEC"]

KINDS = ("vit", "bert")


@dataclass(frozen=True)
class TransformerSpec:
    """An encoder-only transformer. ``kind="vit"`` is pre-LN, ``kind="bert"`` post-LN.

    ViT tokens are ``(image_size // patch_size)^2`` patches plus one class token; BERT tokens are
    ``seq_len`` word pieces. ``num_classes = 0`` means no classifier head (the output is the last
    hidden state); otherwise the head reads the first token (class token / [CLS]).
    """
    kind: str = "vit"
    dim: int = 32
    heads: int = 4
    depth: int = 2
    mlp_dim: int = 64
    num_classes: int = 10
    ln_eps: float = 1e-6
    # ViT
    image_size: int = 8
    patch_size: int = 2
    channels: int = 1
    # BERT
    seq_len: int = 16
    vocab_size: int = 0
    max_positions: int = 0
    type_vocab_size: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")
        for f in ("dim", "heads", "depth", "mlp_dim"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, not {v!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, not {self.num_classes!r}")
        if not self.ln_eps >= 0:
            raise ValueError(f"ln_eps must be >= 0, not {self.ln_eps!r}")
        if self.kind == "vit":
            if self.patch_size < 1 or self.image_size % self.patch_size:
                raise ValueError(f"image_size ({self.image_size}) must be a multiple of "
                                 f"patch_size ({self.patch_size})")
            if self.channels < 1:
                raise ValueError(f"channels must be >= 1, not {self.channels!r}")
        else:
            if self.vocab_size < 1:
                raise ValueError(f"vocab_size must be >= 1 for bert, not {self.vocab_size!r}")
            if self.seq_len < 1 or self.max_positions < self.seq_len:
                raise ValueError(f"need 1 <= seq_len ({self.seq_len}) <= max_positions "
                                 f"({self.max_positions})")
            if self.type_vocab_size < 1:
                raise ValueError(f"type_vocab_size must be >= 1, not {self.type_vocab_size!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size ** 2

    @property
    def tokens(self) -> int:
        return self.num_patches + 1 if self.kind == "vit" else self.seq_len

    @property
    def pre_ln(self) -> bool:
        return self.kind == "vit"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TransformerSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TransformerSpec fields: {sorted(unknown)}")
        return cls(**d)


# The built-in default: a tiny ViT for the 8x8 sklearn digits, 16 patches of 2x2.
DIGITS_SPEC = TransformerSpec(kind="vit", dim=32, heads=4, depth=2, mlp_dim=64, num_classes=10,
                              image_size=8, patch_size=2, channels=1, ln_eps=1e-6)

LAYER_LINEARS = ("q", "k", "v", "proj", "fc1", "fc2")


def linear_shape(spec: TransformerSpec, name: str) -> tuple[int, int]:
    """(out_features, in_features) of a per-layer linear."""
    d, h = spec.dim, spec.mlp_dim
    return {"q": (d, d), "k": (d, d), "v": (d, d), "proj": (d, d), "fc1": (h, d),
            "fc2": (d, h)}[name]


def param_shapes(spec: TransformerSpec) -> dict[str, tuple]:
    """Every canonical parameter name and its shape."""
    d = spec.dim
    shapes: dict[str, tuple] = {}
    if spec.kind == "vit":
        shapes["embed.patch.weight"] = (d, spec.patch_dim)
        shapes["embed.patch.bias"] = (d,)
        shapes["embed.cls"] = (d,)
        shapes["embed.pos"] = (spec.tokens, d)
    else:
        shapes["embed.word"] = (spec.vocab_size, d)
        shapes["embed.pos"] = (spec.max_positions, d)
        shapes["embed.type"] = (spec.type_vocab_size, d)
        shapes["embed.ln.weight"] = (d,)
        shapes["embed.ln.bias"] = (d,)
    for i in range(spec.depth):
        p = f"layers.{i}."
        for ln in ("ln1", "ln2"):
            shapes[p + ln + ".weight"] = (d,)
            shapes[p + ln + ".bias"] = (d,)
        for lin in LAYER_LINEARS:
            shapes[p + lin + ".weight"] = linear_shape(spec, lin)
            shapes[p + lin + ".bias"] = (linear_shape(spec, lin)[0],)
    if spec.kind == "vit":
        shapes["final_ln.weight"] = (d,)
        shapes["final_ln.bias"] = (d,)
    if spec.num_classes:
        shapes["head.weight"] = (spec.num_classes, d)
        shapes["head.bias"] = (spec.num_classes,)
    return shapes


def check_params(spec: TransformerSpec, params: dict) -> None:
    """Raise ``ValueError`` naming the first missing or mis-shaped parameter."""
    for name, shape in param_shapes(spec).items():
        if name not in params:
            raise ValueError(f"missing parameter {name!r} (shape {shape})")
        if tuple(params[name].shape) != shape:
            raise ValueError(f"parameter {name!r} has shape {tuple(params[name].shape)}, "
                             f"expected {shape}")


def init_params(spec: TransformerSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Random parameters (for tests and synthetic models): N(0, 0.02)-like, LN near identity."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in param_shapes(spec).items():
        if name.endswith("ln.weight") or name.endswith("ln1.weight") or name.endswith("ln2.weight"):
            params[name] = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(".bias"):
            params[name] = 0.05 * rng.standard_normal(shape)
        else:
            fan_in = shape[-1] if len(shape) == 2 and not name.startswith("embed.") else 1
            params[name] = rng.standard_normal(shape) / math.sqrt(fan_in) * (
                1.0 if fan_in > 1 else 0.5)
    return {k: v.astype(np.float32) for k, v in params.items()}


# --------------------------------------------------------------------------------------------------
# float forward

def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, ``x * Phi(x)``."""
    from scipy.special import ndtr
    return x * ndtr(x)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def patchify(images: np.ndarray, spec: TransformerSpec) -> np.ndarray:
    """``[B, C, H, W]`` (or ``[B, H, W]`` for one channel) -> ``[B, patches, C*P*P]`` in (C, P, P)
    order, patches row-major: the layout of a Conv2d(kernel=stride=P) flattened weight."""
    x = np.asarray(images)
    if x.ndim == 3 and spec.channels == 1:
        x = x[:, None]
    H = spec.image_size
    if x.ndim != 4 or x.shape[1:] != (spec.channels, H, H):
        raise ValueError(f"images must have shape [B, {spec.channels}, {H}, {H}], got {x.shape}")
    P, g = spec.patch_size, H // spec.patch_size
    x = x.reshape(x.shape[0], spec.channels, g, P, g, P).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(x.shape[0], g * g, spec.patch_dim)


def split_heads(x: np.ndarray, heads: int) -> np.ndarray:
    B, T, D = x.shape
    return x.reshape(B, T, heads, D // heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    B, H, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d)


def forward(spec: TransformerSpec, params: dict, inputs, *, token_types=None,
            trace: dict | None = None) -> np.ndarray:
    """Float forward. ``inputs``: images ``[B, C, H, W]`` (vit) or token ids ``[B, T]`` (bert).

    Returns logits ``[B, classes]`` (or the last hidden state ``[B, T, dim]`` without a head). With
    ``trace`` (a dict) every named intermediate of the module docstring is stored in it.
    """
    t = trace if trace is not None else {}
    P = {k: np.asarray(v, np.float64) for k, v in params.items()}
    eps = spec.ln_eps
    if spec.kind == "vit":
        patches = patchify(inputs, spec).astype(np.float64)
        t["input"] = patches
        tok = patches @ P["embed.patch.weight"].T + P["embed.patch.bias"]
        cls = np.broadcast_to(P["embed.cls"], (tok.shape[0], 1, spec.dim))
        x = np.concatenate([cls, tok], axis=1) + P["embed.pos"]
        t["embed"] = x
    else:
        ids = np.asarray(inputs)
        types = np.zeros_like(ids) if token_types is None else np.asarray(token_types)
        T = ids.shape[1]
        x = P["embed.word"][ids] + P["embed.pos"][:T] + P["embed.type"][types]
        t["embed"] = x
        x = layer_norm(x, P["embed.ln.weight"], P["embed.ln.bias"], eps)
        t["embed_ln"] = x
    for i in range(spec.depth):
        x = _layer(spec, P, f"layers.{i}.", x, t)
    if spec.kind == "vit":
        x = layer_norm(x, P["final_ln.weight"], P["final_ln.bias"], eps)
        t["final_ln"] = x
    if not spec.num_classes:
        return x
    logits = x[:, 0] @ P["head.weight"].T + P["head.bias"]
    t["logits"] = logits
    return logits


def _layer(spec, P, p, x, t):
    def lin(name, v):
        return v @ P[p + name + ".weight"].T + P[p + name + ".bias"]

    def ln(name, v):
        out = layer_norm(v, P[p + name + ".weight"], P[p + name + ".bias"], spec.ln_eps)
        t[p + name] = out
        return out

    a_in = ln("ln1", x) if spec.pre_ln else x
    q, k, v = (lin(n, a_in) for n in ("q", "k", "v"))
    t[p + "q"], t[p + "k"], t[p + "v"] = q, k, v
    scores = split_heads(q, spec.heads) @ split_heads(k, spec.heads).transpose(0, 1, 3, 2)
    scores = scores / math.sqrt(spec.head_dim)
    t[p + "scores"] = scores
    probs = softmax(scores)
    t[p + "probs"] = probs
    ctx = merge_heads(probs @ split_heads(v, spec.heads))
    t[p + "ctx"] = ctx
    x = x + lin("proj", ctx)
    t[p + "attn_res"] = x
    m_in = ln("ln2", x) if spec.pre_ln else ln("ln1", x)
    h = lin("fc1", m_in)
    t[p + "fc1"] = h
    h = gelu(h)
    t[p + "gelu"] = h
    x = m_in + lin("fc2", h) if not spec.pre_ln else x + lin("fc2", h)
    t[p + "mlp_res"] = x
    return x if spec.pre_ln else ln("ln2", x)
