"""A worst-case bound on the engine's deviation from the float layer (``docs/host.md``).

Compare the dequantised engine output ``a_N * Y`` with the float layer built from the
*quantised* parameters (weights ``w_i * ws_i``, bias ``b * acc_scale``), applied to the float
input ``x``. With ``e_i`` the error after factor i (max-norm over elements):

* ``e_0 <= a_0 / 2`` (input rounding, no saturation),
* ``e_i <= ||R_i||_inf * e_{i-1} + (a_i / 2 if shift_i > 0 else 0)``,

where ``||R_i||_inf`` is the largest absolute row sum of factor i's float matrix and
``a_i`` the activation scale after factor i: integer accumulation is exact and the only new
error per factor is the requantisation rounding. ReLU is 1-Lipschitz. The bound assumes no
saturation (true on the calibration data of :func:`litefly.fixed.quantize_layer`).
"""

from __future__ import annotations

import numpy as np

from litefly.fixed import QuantizedLayer, factor_dense

__all__ = ["error_bound"]


def error_bound(q: QuantizedLayer) -> float:
    """Max-norm bound on ``|dequantised engine output - float layer output|`` (see the module doc)."""
    e = q.act_scales[0] / 2
    for i, (f, w) in enumerate(zip(q.layer.chain, q.float_weights())):
        norm = float(np.abs(factor_dense(f, w)).sum(axis=1).max())
        e = norm * e + (q.act_scales[i + 1] / 2 if q.shifts[i] > 0 else 0.0)
    return e
