"""Small helpers shared by the model-side code."""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

__all__ = ["seed_everything", "deterministic_run"]


def seed_everything(seed: int, threads: int | None = 1, deterministic: bool = True) -> torch.Generator:
    """Make a training or evaluation run reproducible for ``seed``.

    Seeds Python's ``random``, numpy's global generator and torch (CPU and, if present, CUDA);
    sets torch's intra-op thread count to ``threads`` (``None`` leaves it; the default 1 makes
    float reductions split the same way on every machine) and, with ``deterministic``, calls
    ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic implementation
    then raises instead of varying) and sets ``CUBLAS_WORKSPACE_CONFIG`` for CUDA. Returns a
    ``torch.Generator`` seeded with ``seed`` for data shuffling.

    The same seed, thread count and torch version then give the same figures run after run;
    across machines, results agree as far as the BLAS kernels agree (same CPU vector width).
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(int(threads))
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


@contextmanager
def deterministic_run(seed: int, threads: int | None = 1) -> Iterator[torch.Generator]:
    """:func:`seed_everything` for the duration of a ``with`` block; torch's thread count and
    deterministic-algorithms setting are restored afterwards (library code should not leave
    them changed). Yields the seeded ``torch.Generator``."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield seed_everything(seed, threads=threads, deterministic=True)
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
