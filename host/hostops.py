"""Host-side operations between layers (numpy, NCHW): relu, maxpool2d, avgpool2d, flatten.

* ``relu``: ``max(x, 0)``.
* ``maxpool2d`` / ``avgpool2d``: window ``kernel`` x ``kernel``, step ``stride`` (0 means
  ``kernel``), no padding, windows that do not fit are dropped (as ``torch`` with
  ``ceil_mode=False``).
* ``flatten``: ``(N, C, H, W) -> (N, C*H*W)`` in C order (as ``torch.flatten(x, 1)``).

They run on float activations (the dequantised output of the previous layer).
"""

from __future__ import annotations

import numpy as np

from litefly.config import HostOp
from litefly.errors import ShapeError

__all__ = ["apply_host_op"]


def _pool(x: np.ndarray, k: int, s: int, reduce) -> np.ndarray:
    if x.ndim != 4:
        raise ShapeError(f"pooling needs an (N, C, H, W) input, got shape {x.shape}")
    n, c, h, w = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    if ho < 1 or wo < 1:
        raise ShapeError(f"pooling window {k} is larger than the {h}x{w} input")
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :ho, :wo]
    return reduce(win, axis=(-2, -1))


def apply_host_op(op: HostOp, x: np.ndarray) -> np.ndarray:
    """Apply one :class:`~litefly.config.HostOp` to a float array."""
    if op.op == "relu":
        return np.maximum(x, 0)
    if op.op == "flatten":
        return x.reshape(x.shape[0], -1)
    stride = op.stride or op.kernel
    if op.op == "maxpool2d":
        return _pool(x, op.kernel, stride, np.max)
    if op.op == "avgpool2d":
        return _pool(x, op.kernel, stride, np.mean)
    raise ShapeError(f"host op {op.op!r} is not known")
