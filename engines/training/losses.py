"""Weak-supervision losses: top-k multiple-instance bag scores and LEGO's degree-variance regulariser.

Loss (per batch of ``cfg.train.batch_size`` videos)::

    s_v   = mean of the k highest node scores over the REAL nodes of all windows of video v,
            k = min(cfg.train.topk, number of real nodes)
    L_mil = mean_v BCE(s_v, y_v)
    L     = L_mil + λ · L_reg      (λ = cfg.train.reg_lambda; L_reg only for LEGO and cfg.train.reg)

Degree-variance regulariser (LEGO; ``cfg.train.reg``, threshold ``α = cfg.train.reg_alpha``). For each
window with fused graph ``G`` (``B×N×N``, :meth:`LegoModel.forward_with_graph`) and real nodes ``V``
(``n = |V| >= 2``; off-diagonal pairs ``i≠j`` in ``V`` only)::

    Ĝ_ij = (G_ij − min G) / (max G − min G + 1e-8)            # min/max over the window's pairs
    S_ij = sigmoid((Ĝ_ij − α) / τ),  τ = REG_TEMPERATURE = 0.05   # soft "edge iff Ĝ_ij > α"
    d_i  = Σ_{j∈V, j≠i} S_ij / (n − 1)                          # normalised degree in [0, 1]
    R    = (1/n) Σ_{i∈V} (d_i − mean_V d)²                      # degree variance of the window
    L_reg = mean over windows with n >= 2 of R

The min-max rescaling makes ``α`` a relative level whatever the scale of ``G`` (matrix-mode powers are
``O(1/N^p)``); the sigmoid is a differentiable stand-in for the hard threshold. Penalising the
variance of the thresholded degrees asks every clip node to keep a similar number of strong
relations, i.e. a smooth, consistent fused graph with no hub or isolated nodes driven by one
representation — in the spirit of LEGO's degree-variance regularisation. ``cfg.train.reg = False``
(or ``λ = 0``) switches it off.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

REG_TEMPERATURE = 0.05
"""``τ`` of the soft edge threshold of :func:`degree_variance_reg`."""


def topk_bag_scores(scores: Tensor, mask: Tensor, owner: Sequence[int], n_bags: int, k: int) -> Tensor:
    """Mean of the ``k`` highest real-node scores per bag: ``scores``/``mask`` ``W×N`` of ``W`` windows,
    ``owner[w]`` = bag index of window ``w`` → ``n_bags``."""
    owner_t = torch.as_tensor(list(owner), dtype=torch.long, device=scores.device)
    out = []
    for b in range(n_bags):
        sel = owner_t == b
        s = scores[sel][mask[sel] > 0.5]
        kk = max(1, min(int(k), int(s.numel())))
        out.append(torch.topk(s, kk).values.mean())
    return torch.stack(out)


def degree_variance_reg(g: Tensor, mask: Tensor, alpha: float, tau: float = REG_TEMPERATURE) -> Tensor:
    """Degree-variance regulariser of fused graphs ``g`` ``B×N×N`` (formula: module docstring)."""
    m = (mask > 0.5).to(g.dtype)
    n = m.sum(dim=-1)  # B
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    pair = m.unsqueeze(-1) * m.unsqueeze(-2) * (1.0 - eye)  # B×N×N real off-diagonal
    big = torch.finfo(g.dtype).max
    gmin = torch.where(pair > 0, g, torch.full_like(g, big)).amin(dim=(-1, -2), keepdim=True)
    gmax = torch.where(pair > 0, g, torch.full_like(g, -big)).amax(dim=(-1, -2), keepdim=True)
    valid = n >= 2
    gmin = torch.where(valid.view(-1, 1, 1), gmin, torch.zeros_like(gmin))
    gmax = torch.where(valid.view(-1, 1, 1), gmax, torch.ones_like(gmax))
    gh = (g - gmin) / (gmax - gmin + 1e-8)
    s = torch.sigmoid((gh - alpha) / tau) * pair
    deg = s.sum(dim=-1) / torch.clamp(n - 1.0, min=1.0).unsqueeze(-1)  # B×N
    cnt = torch.clamp(n, min=1.0)
    mean = (deg * m).sum(dim=-1) / cnt
    var = (((deg - mean.unsqueeze(-1)) ** 2) * m).sum(dim=-1) / cnt  # B
    if not bool(valid.any()):
        return g.sum() * 0.0
    return var[valid].mean()
