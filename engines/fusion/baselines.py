"""Baseline fusion models: ``concat`` and ``add`` MLPs and ``mtn`` (RTFM-style multi-scale temporal
network), with the per-node head they share. Input convention: :mod:`fusewatch.engines.fusion.base`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fusewatch.engines.fusion.base import FeatsLike, FusionModel

DEFAULT_HIDDEN = 128
"""Common width ``H`` of the baselines when neither ``hidden`` nor ``model.proj_dim`` says."""


class NodeHead(nn.Module):
    """Per-node head ``B×N×H`` → ``Linear(H,H)`` → ReLU → ``Linear(H,1)`` → Sigmoid → ``B×N``."""

    def __init__(self, hidden: int, window: int, dropout: float = 0.0):
        super().__init__()
        self.window = window
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.drop(torch.relu(self.fc1(x)))
        return torch.sigmoid(self.fc2(h).reshape(-1, self.window)) * mask


def _present_scale(lst: list[Tensor], present: Tensor) -> list[Tensor]:
    return [x * present[:, i].reshape(-1, 1, 1) for i, x in enumerate(lst)]


class ConcatMLP(FusionModel):
    """Baseline ``concat``: ``[F_1 ‖ … ‖ F_M]`` (``B×N×Σd``) → ``Linear(Σd,H)`` → ReLU → NodeHead.
    A missing representation contributes zeros."""

    fusion = "concat"

    def __init__(self, names, dims, window, hidden: int = DEFAULT_HIDDEN, dropout: float = 0.0):
        super().__init__(names, dims, window)
        self.enc = nn.Linear(sum(self.dims.values()), hidden)
        self.drop = nn.Dropout(dropout)
        self.head = NodeHead(hidden, self.window, dropout)

    def forward(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        lst, mask, present = self._inputs(feats, mask, present)
        x = torch.cat(_present_scale(lst, present), dim=-1)
        return self.head(self.drop(torch.relu(self.enc(x))), mask)


class AddMLP(FusionModel):
    """Baseline ``add``: ``Σ_m present_m · Linear_m(F_m)`` (common dim ``H``) → ReLU → NodeHead."""

    fusion = "add"

    def __init__(self, names, dims, window, hidden: int = DEFAULT_HIDDEN, dropout: float = 0.0):
        super().__init__(names, dims, window)
        self.enc = nn.ModuleList([nn.Linear(self.dims[n], hidden) for n in self.names])
        self.drop = nn.Dropout(dropout)
        self.head = NodeHead(hidden, self.window, dropout)

    def forward(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        lst, mask, present = self._inputs(feats, mask, present)
        x = sum(enc(v) * present[:, i].reshape(-1, 1, 1) for i, (enc, v) in enumerate(zip(self.enc, lst)))
        return self.head(self.drop(torch.relu(x)), mask)


class MTNModel(FusionModel):
    """Baseline ``mtn`` (RTFM's multi-scale temporal network).

    ``[F_1 ‖ … ‖ F_M]`` → ``Linear(Σd,H)`` → ReLU (padded nodes zeroed) → three dilated temporal
    convolutions (kernel 3, dilation 1/2/4, ``H/4`` channels each; zero padding, so padded nodes act
    as zeros) ‖ a 1×1 reduction + non-local self-attention block over the window (padded keys
    masked) → ``Linear(H,H)`` → ReLU + residual → NodeHead. Convolutions are ``Conv2d`` with
    ``(1, k)`` kernels on ``B×H×1×N`` so the ONNX graph uses TensorRT-friendly rank-4 Conv.
    """

    fusion = "mtn"

    def __init__(self, names, dims, window, hidden: int = DEFAULT_HIDDEN, dropout: float = 0.0):
        super().__init__(names, dims, window)
        if hidden % 8:
            raise ValueError(f"mtn: hidden must be a multiple of 8 (got {hidden})")
        c = hidden // 4
        self.hidden = hidden
        self.enc = nn.Linear(sum(self.dims.values()), hidden)
        self.convs = nn.ModuleList([nn.Conv2d(hidden, c, (1, 3), padding=(0, d), dilation=(1, d)) for d in (1, 2, 4)])
        self.reduce = nn.Linear(hidden, c)
        self.theta = nn.Linear(c, c // 2)
        self.phi = nn.Linear(c, c // 2)
        self.g = nn.Linear(c, c // 2)
        self.w_out = nn.Linear(c // 2, c)
        self.fuse = nn.Linear(4 * c, hidden)
        self.drop = nn.Dropout(dropout)
        self.head = NodeHead(hidden, self.window, dropout)
        self._scale = 1.0 / math.sqrt(c // 2)

    def forward(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        lst, mask, present = self._inputs(feats, mask, present)
        m3 = mask.unsqueeze(-1)
        x = torch.relu(self.enc(torch.cat(_present_scale(lst, present), dim=-1))) * m3  # B×N×H
        xc = x.transpose(1, 2).unsqueeze(2)  # B×H×1×N
        branches = [torch.relu(conv(xc)).squeeze(2).transpose(1, 2) for conv in self.convs]  # B×N×c
        y = torch.relu(self.reduce(x))
        att = torch.matmul(self.theta(y), self.phi(y).transpose(1, 2)) * self._scale
        att = torch.softmax(att + (mask.unsqueeze(1) - 1.0) * 1e4, dim=-1)
        nl = self.w_out(torch.matmul(att, self.g(y))) + y
        z = torch.cat(branches + [nl], dim=-1) * m3
        z = torch.relu(self.fuse(self.drop(z))) + x
        return self.head(z, mask)
