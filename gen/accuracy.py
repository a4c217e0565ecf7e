"""Float vs integer-only top-1 accuracy on the digits test split (``python -m gen accuracy``)."""
from __future__ import annotations

import time
from pathlib import Path

from . import checkpoint, golden
from .data import digits_split
from .intops import MODES
from .model import forward
from .quantize import quantize_model

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "digits_vit"


def measure(model_dir=DEFAULT_MODEL, *, modes=MODES, percentile=None) -> dict:
    """``{"float": acc, mode: acc, ...}`` in percent, calibrated on the training split."""
    spec, params = checkpoint.load(model_dir)
    if spec.kind != "vit" or spec.image_size != 8 or spec.channels != 1:
        raise ValueError(f"{model_dir}: the digits benchmark needs an 8x8 one-channel ViT")
    x_tr, _, x_te, y_te = digits_split()
    out = {"float": 100.0 * float((forward(spec, params, x_te).argmax(-1) == y_te).mean())}
    for mode in modes:
        im = quantize_model(spec, params, x_tr, mode=mode, percentile=percentile)
        out[mode] = 100.0 * float((golden.predict(im, x_te) == y_te).mean())
    return out


def main(model_dir=DEFAULT_MODEL, percentile=None) -> int:
    t0 = time.perf_counter()
    acc = measure(model_dir, percentile=percentile)
    n = len(digits_split()[3])
    print(f"digits test split ({n} images), model {model_dir}")
    print(f"{'arithmetic':24s} {'top-1 %':>8s} {'drop':>7s}")
    print(f"{'float (numpy)':24s} {acc['float']:8.2f} {'':>7s}")
    for mode in MODES:
        print(f"{'integer-only ' + mode:24s} {acc[mode]:8.2f} {acc['float'] - acc[mode]:7.2f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0
