"""The 84 MiniRocket kernels and their dilated taps, shared by the conv family and its pruning.

Every choice of three of nine positions weighted 2, the other six -1: each kernel sums
to zero (Dempster, Schmidt and Webb 2021).
"""

from __future__ import annotations

import itertools

import numpy as np

KERNEL_LENGTH = 9
# The 84 kernels: three positions of 2, six of -1.
TWO_POSITIONS = np.array(list(itertools.combinations(range(KERNEL_LENGTH), 3)))
N_KERNELS = len(TWO_POSITIONS)
KERNELS = np.full((N_KERNELS, KERNEL_LENGTH), -1.0, dtype=np.float32)
KERNELS[np.arange(N_KERNELS)[:, None], TWO_POSITIONS] = 2.0


def taps(x: np.ndarray, dilation: int) -> np.ndarray:
    """Zero-padded dilated taps ``[N, W, C, 9]``: ``taps[n, t, c, j] = x[n, t + (j-4)d, c]``."""
    n, w, c = x.shape
    pad = (KERNEL_LENGTH // 2) * dilation
    xp = np.zeros((n, w + 2 * pad, c), dtype=x.dtype)
    xp[:, pad : pad + w] = x
    return np.stack([xp[:, j * dilation : j * dilation + w] for j in range(KERNEL_LENGTH)], axis=-1)


def pool_stride(window: int, positions: int) -> int:
    """Every how many positions a pool's PPV counts: ``W // positions`` (0: every one)."""
    return max(1, int(window) // int(positions)) if positions else 1


def first_position(start, stride: int):
    """The first position on the grid ``0, s, 2s, ...`` at or after ``start``."""
    return -(-start // stride) * stride
