"""The models the accelerator benches and tests run: the built-in digits ViT and a BERT encoder
layer with random weights (seq 16, dim 64, 4 heads, MLP 256), each quantised for a given
accelerator configuration, with inputs."""
from __future__ import annotations

import functools

import numpy as np

from hw.config import AcceleratorConfig

from . import checkpoint, golden
from .compiler import policy_for
from .model import TransformerSpec, init_params
from .quantize import ActPolicy, IntModel, quantize_model

__all__ = ["BERT_LAYER_SPEC", "digits_vit", "bert_layer"]

BERT_LAYER_SPEC = TransformerSpec(kind="bert", dim=64, heads=4, depth=1, mlp_dim=256,
                                  num_classes=0, seq_len=16, vocab_size=100, max_positions=16,
                                  type_vocab_size=2)


@functools.lru_cache(maxsize=None)
def _digits(mode: str, probs_bits: int) -> tuple[IntModel, np.ndarray]:
    from .accuracy import DEFAULT_MODEL
    from .data import digits_split
    spec, params = checkpoint.load(DEFAULT_MODEL)
    x_train, _, x_test, _ = digits_split()
    im = quantize_model(spec, params, x_train, mode=mode, policy=ActPolicy({"probs": probs_bits}))
    return im, x_test


def digits_vit(cfg: AcceleratorConfig, n: int) -> tuple[IntModel, np.ndarray]:
    """The digits ViT quantised for ``cfg`` and its first ``n`` test images as integer
    patches."""
    probs = policy_for(cfg).bits("vit", "probs")
    im, x_test = _digits(cfg.mode, probs)
    return im, golden.quantize_input(im, x_test[:n])


@functools.lru_cache(maxsize=None)
def _bert(mode: str) -> tuple[IntModel, np.ndarray]:
    params = init_params(BERT_LAYER_SPEC, seed=3)
    ids = np.random.default_rng(1).integers(0, BERT_LAYER_SPEC.vocab_size,
                                            (32, BERT_LAYER_SPEC.seq_len))
    # the ivit ShiftGELU unit needs |x0| < 256: an 8-bit GELU input scale
    over = {"probs": 16, "fc1": 8, "gelu": 8} if mode == "ivit" else {"probs": 16}
    return quantize_model(BERT_LAYER_SPEC, params, ids, mode=mode,
                          policy=ActPolicy(over)), ids


def bert_layer(cfg: AcceleratorConfig, n: int) -> tuple[IntModel, np.ndarray]:
    """The BERT layer (needs ``cfg.abits = 16``) and ``n`` token-id rows."""
    im, ids = _bert(cfg.mode)
    return im, ids[:n]
