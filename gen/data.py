"""Real data: the sklearn 8x8 digits with the fixed split every Dyad figure is measured on."""
from __future__ import annotations

import numpy as np

__all__ = ["digits_split"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_split():
    """``(x_train, y_train, x_test, y_test)``: images ``[N, 1, 8, 8]`` float32 in ``[0, 1]``.

    Stratified 80/20 split with a fixed seed: 1437 training and 360 held-out test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION,
                                              random_state=SPLIT_SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te
