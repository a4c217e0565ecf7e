"""Hugging Face style checkpoints (``config.json`` + ``model.safetensors``) <-> spec + float
weights.

Reads ``ViTModel`` / ``ViTForImageClassification`` and ``BertModel`` / ``BertFor*`` tensor names
with numpy and safetensors only (no torch, no transformers). :func:`save` writes the same layout,
so the built-in digits model is an ordinary ViT checkpoint. Pooler weights are ignored: Dyad
classifies from the first token without the pooler's tanh.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .model import TransformerSpec, check_params

__all__ = ["load", "save", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: bad config, unsupported architecture, missing tensor."""


_LAYER_NAMES = {
    "vit": {"ln1": "layernorm_before", "ln2": "layernorm_after",
            "q": "attention.attention.query", "k": "attention.attention.key",
            "v": "attention.attention.value", "proj": "attention.output.dense",
            "fc1": "intermediate.dense", "fc2": "output.dense"},
    "bert": {"ln1": "attention.output.LayerNorm", "ln2": "output.LayerNorm",
             "q": "attention.self.query", "k": "attention.self.key",
             "v": "attention.self.value", "proj": "attention.output.dense",
             "fc1": "intermediate.dense", "fc2": "output.dense"},
}


def _hf_names(spec: TransformerSpec, prefix: str) -> dict[str, str]:
    """canonical name -> Hugging Face name (without reshaping)."""
    names = {}
    if spec.kind == "vit":
        e = prefix + "embeddings."
        names.update({"embed.patch.weight": e + "patch_embeddings.projection.weight",
                      "embed.patch.bias": e + "patch_embeddings.projection.bias",
                      "embed.cls": e + "cls_token", "embed.pos": e + "position_embeddings",
                      "final_ln.weight": prefix + "layernorm.weight",
                      "final_ln.bias": prefix + "layernorm.bias"})
    else:
        e = prefix + "embeddings."
        names.update({"embed.word": e + "word_embeddings.weight",
                      "embed.pos": e + "position_embeddings.weight",
                      "embed.type": e + "token_type_embeddings.weight",
                      "embed.ln.weight": e + "LayerNorm.weight",
                      "embed.ln.bias": e + "LayerNorm.bias"})
    for i in range(spec.depth):
        for ours, theirs in _LAYER_NAMES[spec.kind].items():
            for suffix in ("weight", "bias"):
                names[f"layers.{i}.{ours}.{suffix}"] = (
                    f"{prefix}encoder.layer.{i}.{theirs}.{suffix}")
    if spec.num_classes:
        names["head.weight"] = "classifier.weight"
        names["head.bias"] = "classifier.bias"
    return names


def _need(cfg: dict, key: str, path: Path):
    if key not in cfg:
        raise CheckpointError(f"{path}: config.json has no {key!r}")
    return cfg[key]


def spec_from_config(cfg: dict, path: Path, num_classes: int) -> TransformerSpec:
    model_type = cfg.get("model_type")
    if model_type not in ("vit", "bert"):
        raise CheckpointError(f"{path}: unsupported model_type {model_type!r} "
                              f"(supported: 'vit', 'bert')")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{path}: unsupported hidden_act {act!r} (only exact 'gelu')")
    common = dict(kind=model_type, dim=_need(cfg, "hidden_size", path),
                  heads=_need(cfg, "num_attention_heads", path),
                  depth=_need(cfg, "num_hidden_layers", path),
                  mlp_dim=_need(cfg, "intermediate_size", path),
                  num_classes=num_classes, ln_eps=float(cfg.get("layer_norm_eps", 1e-12)))
    try:
        if model_type == "vit":
            return TransformerSpec(**common, image_size=_need(cfg, "image_size", path),
                                   patch_size=_need(cfg, "patch_size", path),
                                   channels=cfg.get("num_channels", 3))
        max_pos = _need(cfg, "max_position_embeddings", path)
        return TransformerSpec(**common, vocab_size=_need(cfg, "vocab_size", path),
                               max_positions=max_pos, seq_len=int(cfg.get("seq_len", max_pos)),
                               type_vocab_size=cfg.get("type_vocab_size", 2))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _files(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    cfg, weights = path / "config.json", path / "model.safetensors"
    for f in (cfg, weights):
        if not f.is_file():
            raise CheckpointError(f"{path}: missing {f.name}")
    return cfg, weights


def load(path, *, seq_len: int | None = None) -> tuple[TransformerSpec, dict[str, np.ndarray]]:
    """Load a checkpoint directory. Returns ``(spec, float32 params with canonical names)``.

    ``seq_len`` fixes the BERT sequence length the accelerator is built for (default: the
    ``seq_len`` key of config.json, else ``max_position_embeddings``).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    cfg_path, w_path = _files(path)
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({exc})") from None
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{w_path}: cannot read safetensors ({exc})") from None
    kind = cfg.get("model_type")
    prefix = ""
    if kind in ("vit", "bert") and any(k.startswith(kind + ".") for k in tensors):
        prefix = kind + "."
    num_classes = 0
    if "classifier.weight" in tensors:
        num_classes = int(tensors["classifier.weight"].shape[0])
    if seq_len is not None:
        cfg = dict(cfg, seq_len=seq_len)
    spec = spec_from_config(cfg, cfg_path.parent, num_classes)
    params = {}
    for ours, theirs in _hf_names(spec, prefix).items():
        if theirs not in tensors:
            raise CheckpointError(f"{w_path}: missing tensor {theirs!r}")
        params[ours] = np.asarray(tensors[theirs], dtype=np.float32)
    if spec.kind == "vit":
        params["embed.patch.weight"] = params["embed.patch.weight"].reshape(spec.dim, -1)
        params["embed.cls"] = params["embed.cls"].reshape(spec.dim)
        params["embed.pos"] = params["embed.pos"].reshape(-1, spec.dim)
    try:
        check_params(spec, params)
    except ValueError as exc:
        raise CheckpointError(f"{w_path}: {exc}") from None
    return spec, params


def save(path, spec: TransformerSpec, params: dict) -> Path:
    """Write ``spec`` and ``params`` as a Hugging Face style checkpoint directory."""
    from safetensors.numpy import save_file

    check_params(spec, params)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    prefix = spec.kind + "." if spec.num_classes else ""
    out = {}
    for ours, theirs in _hf_names(spec, prefix).items():
        out[theirs] = np.ascontiguousarray(params[ours], dtype=np.float32)
    cfg = {"model_type": spec.kind, "hidden_size": spec.dim, "num_attention_heads": spec.heads,
           "num_hidden_layers": spec.depth, "intermediate_size": spec.mlp_dim,
           "hidden_act": "gelu", "layer_norm_eps": spec.ln_eps}
    if spec.kind == "vit":
        p = spec.patch_size
        out[prefix + "embeddings.patch_embeddings.projection.weight"] = out[
            prefix + "embeddings.patch_embeddings.projection.weight"].reshape(
            spec.dim, spec.channels, p, p)
        out[prefix + "embeddings.cls_token"] = out[prefix + "embeddings.cls_token"].reshape(
            1, 1, spec.dim)
        out[prefix + "embeddings.position_embeddings"] = out[
            prefix + "embeddings.position_embeddings"].reshape(1, spec.tokens, spec.dim)
        cfg.update(image_size=spec.image_size, patch_size=spec.patch_size,
                   num_channels=spec.channels,
                   architectures=["ViTForImageClassification" if spec.num_classes else "ViTModel"])
    else:
        cfg.update(vocab_size=spec.vocab_size, max_position_embeddings=spec.max_positions,
                   type_vocab_size=spec.type_vocab_size, seq_len=spec.seq_len,
                   architectures=["BertForSequenceClassification" if spec.num_classes
                                  else "BertModel"])
    if spec.num_classes:
        cfg["id2label"] = {str(i): str(i) for i in range(spec.num_classes)}
    save_file(out, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return path


