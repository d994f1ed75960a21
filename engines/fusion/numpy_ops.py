"""numpy-only pieces of the fusion model that serving needs (no torch: the runtime install has none):
frozen copies of linear layers (``x ...×d_in → ...×d_out``) and the row-normalisation floor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import torch

EPS_NORM = 1e-12
"""Squared-norm floor for row L2 normalisation (``x * rsqrt(max(|x|², EPS_NORM))``)."""


def numpy_affine(w: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """numpy ``x ...×d_in → x @ wᵀ + b`` (``w`` ``d_out×d_in``), computed in ``x``'s float dtype.
    The callable carries ``weight``, ``bias`` and ``out_dim``."""
    cache: dict = {}

    def f(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        dt = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        if dt not in cache:
            cache[dt] = (np.ascontiguousarray(w.T.astype(dt)), b.astype(dt))
        wt, bb = cache[dt]
        return x.astype(dt, copy=False) @ wt + bb

    f.weight, f.bias, f.out_dim = w, b, int(w.shape[0])  # type: ignore[attr-defined]
    return f


def numpy_linear(lin: torch.nn.Linear) -> Callable[[np.ndarray], np.ndarray]:
    """Frozen numpy copy of ``lin``: ``x ...×d_in`` → ``...×d_out`` (computed in ``x``'s float dtype)."""
    w = lin.weight.detach().cpu().double().numpy()
    b = lin.bias.detach().cpu().double().numpy() if lin.bias is not None else np.zeros(w.shape[0])
    return numpy_affine(w, b)
