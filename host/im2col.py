"""numpy im2col / col2im in the golden model's ordering (board-safe: numpy only).

A column (one row of the returned array) holds the receptive field of one output pixel,
flattened as ``kernel_position * in_channels + channel``: kernel position outer (row-major
over ``(kh, kw)``), channel inner, as :meth:`litefly.nn.DeButConv2d.im2col`. Rows are
ordered ``(batch, h_out, w_out)``.
"""

from __future__ import annotations

import numpy as np

from litefly.config import LayerConfig
from litefly.errors import ShapeError

__all__ = ["output_size", "im2col", "col2im", "layer_im2col", "layer_col2im"]


def output_size(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """Output height and width of a convolution (as ``torch.nn.Conv2d``)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return ho, wo


def im2col(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
           padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1)) -> np.ndarray:
    """Columns ``(n*h_out*w_out, kh*kw*c)`` of an NCHW array, in the reference ordering; dtype kept."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"im2col: input has shape {x.shape}, expected (N, C, H, W)")
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    ho, wo = output_size(h, w, kernel, stride, padding, dilation)
    if ho < 1 or wo < 1:
        raise ShapeError(f"im2col: input {h}x{w} is smaller than the {kh}x{kw} kernel "
                         f"(padding {ph},{pw}, dilation {dh},{dw})")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if (ph or pw) else x
    out = np.empty((n, ho, wo, kh * kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh, j * dw: j * dw + sw * (wo - 1) + 1: sw]
            out[:, :, :, i * kw + j, :] = patch.transpose(0, 2, 3, 1)
    return out.reshape(n * ho * wo, kh * kw * c)


def col2im(y: np.ndarray, n: int, h_out: int, w_out: int) -> np.ndarray:
    """Output rows ``(n*h_out*w_out, c_out)`` back to NCHW ``(n, c_out, h_out, w_out)``."""
    y = np.asarray(y)
    if y.ndim != 2 or y.shape[0] != n * h_out * w_out:
        raise ShapeError(f"col2im: rows have shape {y.shape}, expected ({n * h_out * w_out}, C)")
    return np.ascontiguousarray(y.reshape(n, h_out, w_out, y.shape[1]).transpose(0, 3, 1, 2))


def layer_im2col(layer: LayerConfig, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Input of ``layer`` as chain columns, plus ``(n, h_out, w_out)`` for :func:`layer_col2im`.

    A conv2d layer takes NCHW; a linear layer takes ``(n, in_features)`` (or anything whose
    trailing size is ``in_features`` after flattening each sample).
    """
    x = np.asarray(x)
    if layer.kind == "linear":
        if x.ndim < 2:
            raise ShapeError(f"layer {layer.name!r}: input has shape {x.shape}, expected (N, {layer.in_features})")
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != layer.in_features:
            raise ShapeError(f"layer {layer.name!r}: input has shape {x.shape}, expected (N, {layer.in_features})")
        return flat, (x.shape[0], 1, 1)
    if x.ndim != 4 or x.shape[1] != layer.in_channels:
        raise ShapeError(f"layer {layer.name!r}: input has shape {x.shape}, expected (N, {layer.in_channels}, H, W)")
    ho, wo = output_size(x.shape[2], x.shape[3], layer.kernel, layer.stride, layer.padding, layer.dilation)
    cols = im2col(x, layer.kernel, layer.stride, layer.padding, layer.dilation)
    return cols, (x.shape[0], ho, wo)


def layer_col2im(layer: LayerConfig, y: np.ndarray, geom: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`layer_im2col` for the output rows: NCHW for conv2d, ``(n, out)`` for linear."""
    n, ho, wo = geom
    if layer.kind == "linear":
        return np.asarray(y).reshape(n, layer.out_features)
    return col2im(y, n, ho, wo)
