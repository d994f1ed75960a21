"""Relationship graphs and their learnable expansion (LEGO, ICLR 2025) — pure tensor functions.

Notation (used in every docstring of :mod:`engines`):

* ``B`` batch (windows), ``N`` clip nodes per window, ``M`` representations, ``d`` / ``d_m`` feature
  dims, ``K`` highest expansion order, ``P`` / ``Q`` orders of the first / second member of a pair.
* ``mask`` ``B×N`` float in {0, 1}: 1 = real node. Padded nodes sit at the FRONT (oldest positions);
  the newest clip is always row ``N-1``.
* ``present`` ``B×M`` float in {0, 1}: 0 = the representation is missing for that whole window;
  its expansion then keeps only the order-0 term ``R^0 = I``.

Conventions shared by the torch model, the incremental numpy state and the ONNX graphs:

* Base graph ``R_m = Z_m Z_mᵀ`` with ``Z_m`` the row-L2-normalised (optionally projected) features.
  Rows/cols of padded nodes are zero; an all-zero feature row gives a zero row/col too.
* ``R^0 = diag(mask)`` (identity restricted to real nodes), for every representation and both modes.
* ``matrix`` mode: ``E^p = T^p`` with ``T = D^{-1/2} relu(R) D^{-1/2}``, ``D`` the row sums
  (zero degree guarded by ``clamp(D, eps)``; such rows of ``relu(R)`` are zero so ``T`` rows are zero).
* ``hadamard`` mode: ``E^p = H^{∘p}`` (element-wise power) with ``H = ((R + 1) / 2) ⊙ (m mᵀ)``.
* For ``p >= 1`` the expansion is multiplied by ``present``.
* Pair fusion ``G = Σ_{p≤P} Σ_{q≤Q} A_pq (E_a^p ⊙ E_b^q)``; several pairs are averaged.
* Head conditioning (:func:`standardize_graph`): the head reads ``Ĝ``, ``G`` standardised over the
  window's real nodes — off-diagonal entries with the mean/std of the real off-diagonal pairs, the
  diagonal with the mean/std of the real diagonal entries (the two live on very different scales:
  in ``matrix`` mode off-diagonal products are ``O(1/N²)``, the identity terms ``O(1)``), then
  divided by ``√n`` (``n`` real nodes: rows of about unit norm). Padded rows/cols of ``Ĝ`` are 0.
* Node propagation (:func:`degree_normalize`): ``P = G / max(Σ_j |G_ij|, eps)`` (row-stochastic
  for non-negative ``G``) spreads per-node signals ``U`` over the fused graph: ``H = P U``.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from fusewatch.engines.fusion.names import EXPANSIONS
from fusewatch.engines.fusion.numpy_ops import EPS_NORM  # noqa: E402  (numpy-only; serving imports it there)

EPS_DEG = 1e-12
"""Degree floor of the symmetric normalisation."""
EPS_STD = 1e-12
"""Absolute variance floor of :func:`standardize_graph` (``σ² >= EPS_STD``)."""
REL_STD = 1e-4
"""Relative std floor of :func:`standardize_graph`: ``σ >= REL_STD · mean|G|`` over the same
entries, so a (near-)constant window is not blown up to float noise."""


# --------------------------------------------------------------------------------------- torch ----


def l2_normalize(x: Tensor, eps: float = EPS_NORM) -> Tensor:
    """Row-normalise ``x`` (``...×d``) to unit L2 norm; zero rows stay zero. Export-friendly
    (ReduceSum/Max/Sqrt/Div, no Shape/Expand)."""
    ss = (x * x).sum(dim=-1, keepdim=True)
    return x / torch.sqrt(torch.clamp(ss, min=eps))


def cosine_graph(z: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cosine-similarity graph.

    Args:
        z: ``B×N×d`` features (already projected if the model projects; NOT yet normalised).
        mask: ``B×N`` {0,1} or None. Padded rows are zeroed before the product.
    Returns:
        ``B×N×N`` with ``R_ij = <ẑ_i, ẑ_j>``; rows/cols of masked or all-zero nodes are 0.
    """
    zn = l2_normalize(z)
    if mask is not None:
        zn = zn * mask.unsqueeze(-1)
    return torch.matmul(zn, zn.transpose(-1, -2))


def identity_graph(mask: Tensor, eye: Tensor) -> Tensor:
    """``diag(mask)``: ``mask`` ``B×N`` and a constant ``eye`` ``N×N`` → ``B×N×N`` (broadcast Mul only)."""
    return eye * mask.unsqueeze(-2)


def sym_normalize(r: Tensor, eps: float = EPS_DEG) -> Tensor:
    """``T = D^{-1/2} relu(R) D^{-1/2}`` over the last two axes (``...×N×N`` → same)."""
    rp = torch.relu(r)
    dinv = torch.rsqrt(torch.clamp(rp.sum(dim=-1), min=eps))
    return rp * dinv.unsqueeze(-1) * dinv.unsqueeze(-2)


def hadamard_base(r: Tensor, mask: Tensor) -> Tensor:
    """``H = ((R + 1) / 2) ⊙ (m mᵀ)``: ``r`` ``B×M×N×N``, ``mask`` ``B×N`` → ``B×M×N×N``."""
    mm = mask.unsqueeze(-1) * mask.unsqueeze(-2)
    return (r + 1.0) * 0.5 * mm.unsqueeze(1)


def expand_graphs(
    r: Tensor,
    mask: Tensor,
    present: Tensor,
    order: int,
    mode: str,
    eye: Tensor | None = None,
    ones_m: Tensor | None = None,
) -> Tensor:
    """Expansion of ``M`` base graphs to orders ``0..order``.

    Args:
        r: ``B×M×N×N`` base cosine graphs (padded rows/cols are re-zeroed here).
        mask: ``B×N`` {0,1}. present: ``B×M`` {0,1}.
        order: highest order ``K`` (>= 0). mode: ``matrix`` | ``hadamard``.
        eye, ones_m: optional constants ``N×N`` identity and ``1×M×1×1`` ones (pass buffers when
            exporting so that no Shape-driven ops are traced).
    Returns:
        ``B×M×(K+1)×N×N``; index ``[:, m, p]`` is ``E_m^p`` (``p = 0`` is ``diag(mask)``).
    """
    if mode not in EXPANSIONS:
        raise ValueError(f"expansion must be one of {EXPANSIONS} (got {mode!r})")
    if eye is None:
        eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    if ones_m is None:
        ones_m = torch.ones(1, r.shape[1], 1, 1, dtype=r.dtype, device=r.device)
    mm = (mask.unsqueeze(-1) * mask.unsqueeze(-2)).unsqueeze(1)  # B×1×N×N
    pres = present.unsqueeze(-1).unsqueeze(-1)  # B×M×1×1
    i0 = identity_graph(mask, eye).unsqueeze(1) * ones_m  # B×M×N×N
    powers = [i0]
    if order >= 1:
        if mode == "matrix":
            t = sym_normalize(r * mm) * pres
            cur = t
            powers.append(t)
            for _ in range(2, order + 1):
                cur = torch.matmul(cur, t)
                powers.append(cur)
        else:
            h = (r + 1.0) * 0.5 * mm * pres
            cur = h
            powers.append(h)
            for _ in range(2, order + 1):
                cur = cur * h
                powers.append(cur)
    return torch.stack(powers, dim=2)


def _masked_standardize(g: Tensor, sel: Tensor, rel: float, eps: float) -> Tensor:
    """``sel ⊙ (g − μ) / σ`` with ``μ, σ`` over the entries selected by ``sel`` (``{0,1}``, last two
    axes) — ``σ² = max(var + (rel·mean|g|)², eps)`` (a Clip, not an Add: ONNX optimisers drop the
    addition of a tiny constant)."""
    cnt = torch.clamp(sel.sum(dim=(-1, -2), keepdim=True), min=1.0)
    gs = g * sel
    mu = gs.sum(dim=(-1, -2), keepdim=True) / cnt
    dev = (g - mu) * sel
    var = (dev * dev).sum(dim=(-1, -2), keepdim=True) / cnt
    scale = torch.abs(gs).sum(dim=(-1, -2), keepdim=True) / cnt * rel
    return dev / torch.sqrt(torch.clamp(var + scale * scale, min=eps))


def standardize_graph(
    g: Tensor, mask: Tensor, eye: Tensor | None = None, rel: float = REL_STD, eps: float = EPS_STD
) -> Tensor:
    """Window-level standardisation of a fused graph ``g`` (``B×N×N``) over the real nodes
    (``mask`` ``B×N``): off-diagonal entries use the mean/std of the real off-diagonal pairs
    ``(i≠j, both real)``, diagonal entries those of the real diagonal entries. Rows/cols of padded
    nodes are 0 and never influence real entries. ``eye``: optional ``N×N`` identity constant
    (export). Windows with one real node give 0 (no spread)."""
    if eye is None:
        eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    mm = mask.unsqueeze(-1) * mask.unsqueeze(-2)
    diag = mm * eye
    off = mm - diag
    return _masked_standardize(g, off, rel, eps) + _masked_standardize(g, diag, rel, eps)


def degree_normalize(g: Tensor, eps: float = EPS_DEG) -> Tensor:
    """``P = G / max(Σ_j |G_ij|, eps)`` (row L1 normalisation; zero rows stay zero)."""
    deg = torch.abs(g).sum(dim=-1, keepdim=True)
    return g / torch.clamp(deg, min=eps)


def pair_list(num_reps: int) -> list[tuple[int, int]]:
    """Fused pairs: every ``(a, b)`` with ``a < b``; a single representation is fused with itself."""
    if num_reps < 1:
        raise ValueError("at least one representation is required")
    if num_reps == 1:
        return [(0, 0)]
    return list(combinations(range(num_reps), 2))


def fuse_pair(ea: Tensor, eb: Tensor, a: Tensor) -> Tensor:
    """Reference (einsum) pair fusion ``G = Σ_pq A_pq (E_a^p ⊙ E_b^q)``.

    Args: ``ea`` ``B×(P+1)×N×N``, ``eb`` ``B×(Q+1)×N×N``, ``a`` ``(P+1)×(Q+1)``.
    Returns: ``B×N×N``.
    """
    return torch.einsum("pq,bpij,bqij->bij", a, ea, eb)


def degree_variance(g: Tensor, mask: Tensor) -> Tensor:
    """Variance of the row sums (degrees) of ``g`` (``B×N×N``) over real nodes → ``B``.

    A convenience for the degree-variance regulariser of training (padded nodes excluded)."""
    deg = g.sum(dim=-1)
    cnt = torch.clamp(mask.sum(dim=-1), min=1.0)
    mean = (deg * mask).sum(dim=-1) / cnt
    return (((deg - mean.unsqueeze(-1)) ** 2) * mask).sum(dim=-1) / cnt


# --------------------------------------------------------------------------------------- numpy ----


def np_l2_normalize(x: np.ndarray, eps: float = EPS_NORM) -> np.ndarray:
    """numpy twin of :func:`l2_normalize` (``...×d``; dtype preserved)."""
    ss = np.sum(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(np.maximum(ss, x.dtype.type(eps)))


def np_cosine_graph(f: np.ndarray, mask: np.ndarray | None = None, project=None) -> np.ndarray:
    """Batch (non-incremental) reference: ``f`` ``N×d`` (one window, one representation),
    ``mask`` ``N`` → ``N×N``. ``project``: optional callable ``(n×d) → (n×k)``. All-zero raw rows are
    treated as missing (zero row/col), matching :class:`fusewatch.engines.serving.state.IncrementalGraph`."""
    f = np.asarray(f)
    missing = ~np.any(f != 0, axis=-1)
    z = project(f) if project is not None else f
    z = np_l2_normalize(np.asarray(z, dtype=f.dtype))
    keep = ~missing
    if mask is not None:
        keep &= np.asarray(mask) > 0.5
    z = z * keep[:, None].astype(z.dtype)
    return z @ z.T


def np_expand(r: np.ndarray, mask: np.ndarray, present: float, order: int, mode: str) -> np.ndarray:
    """numpy reference of :func:`expand_graphs` for one window and one representation:
    ``r`` ``N×N``, ``mask`` ``N`` → ``(order+1)×N×N`` (matrix powers via ``np.linalg.matrix_power``)."""
    m = np.asarray(mask, dtype=r.dtype)
    mm = np.outer(m, m)
    out = [np.diag(m)]
    if mode == "matrix":
        rp = np.maximum(r * mm, 0)
        dinv = 1.0 / np.sqrt(np.maximum(rp.sum(-1), EPS_DEG))
        t = rp * dinv[:, None] * dinv[None, :] * present
        out += [np.linalg.matrix_power(t, p) for p in range(1, order + 1)]
    elif mode == "hadamard":
        h = (r + 1) * 0.5 * mm * present
        out += [h**p for p in range(1, order + 1)]
    else:
        raise ValueError(mode)
    return np.stack(out)
