"""LEGO: *Learnable Expansion of Graph Operators for Multi-Modal Feature Fusion* (ICLR 2025).

Per representation ``m`` a cosine relationship graph ``R_m`` (``N×N``) of the window's clips is
expanded to orders ``0..K`` (matrix or Hadamard powers, :func:`fusewatch.engines.fusion.graphs.expand_graphs`),
pairs of representations are fused with learnable coefficients ``A`` (``Σ_pq A_pq E_a^p ⊙ E_b^q``)
and a per-node head scores every clip from its row of the fused graph ``G`` (and, optionally, the
node branch ``P U``). Input convention: :mod:`fusewatch.engines.fusion.base`.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fusewatch.engines.fusion.base import FeatsLike, FusionModel, _exporting
from fusewatch.engines.fusion.graphs import cosine_graph, degree_normalize, expand_graphs, pair_list, standardize_graph
from fusewatch.engines.fusion.names import DEFAULT_GRAPH_NORM, EXPANSIONS, GRAPH_NORMS
from fusewatch.engines.fusion.numpy_ops import numpy_linear


class LegoModel(FusionModel):
    """LEGO: relationship graphs → learnable expansion (orders 0..P / 0..Q) → pairwise fusion → head.

    Args:
        names, dims, window: representations, ``{name: d_m}``, ``N``.
        order_p, order_q: ``P`` and ``Q``. expansion: ``matrix`` | ``hadamard``.
        softplus: use ``softplus(A)`` (non-negative coefficients) instead of raw ``A``.
        proj_dim: >0: learned ``Linear(d_m, proj_dim)`` per representation before cosine similarity.
        dropout: dropout between the two head layers (training only).
        node_dim: ``k`` > 0: node branch — per representation ``u_m = Linear(d_m, k)`` applied to
            every real clip (an all-zero feature row = missing clip gives 0), ``U`` = the ``M``
            node signals side by side (``B×N×(M·k)``, representation ``m`` times ``present_m``),
            propagated by the fused graph operator ``H = P U`` with ``P`` = ``G`` row-normalised
            by its degree (:func:`fusewatch.engines.fusion.graphs.degree_normalize`). 0: head on rows of ``G`` only.
        graph_norm: conditioning of the head's view of ``G`` (:data:`GRAPH_NORMS`).

    Head: ``x_i = [Ĝ_i ‖ H_i]`` (``N + M·k``) → ``fc1 = Linear(N + M·k, N + M·k)`` → ReLU →
    ``fc2 = Linear(·, 1)`` → Sigmoid, with ``Ĝ`` the conditioned fused graph. With ``node_dim = 0``
    and ``graph_norm = "none"`` this is the original LEGO head on the raw rows of ``G``.

    Parameters: ``A`` ``num_pairs×(P+1)×(Q+1)`` (pairs: :func:`fusewatch.engines.fusion.graphs.pair_list`), ``proj``,
    ``node_enc`` (node branch), head ``fc1``, ``fc2``.

    Set ``model.random_pair = True`` to fuse one random pair per forward while training (M > 2).
    """

    fusion = "lego"

    def __init__(
        self,
        names: Sequence[str],
        dims: Mapping[str, int],
        window: int,
        order_p: int = 2,
        order_q: int = 2,
        expansion: str = "matrix",
        softplus: bool = False,
        proj_dim: int = 0,
        dropout: float = 0.0,
        node_dim: int = 0,
        graph_norm: str = DEFAULT_GRAPH_NORM,
    ):
        super().__init__(names, dims, window)
        if expansion not in EXPANSIONS:
            raise ValueError(f"expansion must be {'|'.join(EXPANSIONS)} (got {expansion!r})")
        if graph_norm not in GRAPH_NORMS:
            raise ValueError(f"graph_norm must be one of {GRAPH_NORMS} (got {graph_norm!r})")
        if int(node_dim) < 0:
            raise ValueError(f"node_dim must be >= 0 (got {node_dim})")
        self.order_p, self.order_q = int(order_p), int(order_q)
        self.order = max(self.order_p, self.order_q)
        self.expansion = expansion
        self.softplus = bool(softplus)
        self.proj_dim = int(proj_dim)
        self.node_dim = int(node_dim)
        self.graph_norm = graph_norm
        self.random_pair = False
        n, m, k1 = self.window, self.num_reps, self.order + 1
        p1, q1 = self.order_p + 1, self.order_q + 1
        self.pairs = pair_list(m)
        npairs = len(self.pairs)
        self.proj = (
            nn.ModuleList([nn.Linear(self.dims[x], self.proj_dim) for x in self.names]) if self.proj_dim > 0 else None
        )
        self.node_enc = (
            nn.ModuleList([nn.Linear(self.dims[x], self.node_dim) for x in self.names]) if self.node_dim > 0 else None
        )
        init = 1.0 / (p1 * q1)
        raw = math.log(math.expm1(init)) if self.softplus else init
        self.A = nn.Parameter(torch.full((npairs, p1, q1), raw))
        width = n + m * self.node_dim
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, 1)
        self.drop = nn.Dropout(dropout)
        # constants (not saved in checkpoints)
        self.register_buffer("eye", torch.eye(n), persistent=False)
        self.register_buffer("ones_m", torch.ones(1, m, 1, 1), persistent=False)
        sel = torch.zeros(npairs, p1, m * k1)
        idx_b = torch.zeros(npairs, q1, dtype=torch.long)
        for k, (a, b) in enumerate(self.pairs):
            for p in range(p1):
                sel[k, p, a * k1 + p] = 1.0
            for q in range(q1):
                idx_b[k, q] = b * k1 + q
        self.register_buffer("sel", sel, persistent=False)
        self.register_buffer("idx_b", idx_b, persistent=False)

    # -- coefficients ---------------------------------------------------------------------------
    def coefficients(self) -> Tensor:
        """Effective ``A`` (``num_pairs×(P+1)×(Q+1)``), i.e. ``softplus(A)`` when enabled."""
        return nn.functional.softplus(self.A) if self.softplus else self.A

    def _pair_index(self, pair: int | tuple[int, int] | None) -> list[int] | None:
        if pair is None:
            if self.training and self.random_pair and len(self.pairs) > 1:
                return [random.randrange(len(self.pairs))]
            return None
        if isinstance(pair, int):
            if not 0 <= pair < len(self.pairs):
                raise ValueError(f"pair index {pair} out of range (0..{len(self.pairs) - 1})")
            return [pair]
        t = (
            self.names.index(pair[0]) if isinstance(pair[0], str) else int(pair[0]),
            self.names.index(pair[1]) if isinstance(pair[1], str) else int(pair[1]),
        )
        if t not in self.pairs:
            raise ValueError(f"pair {pair} is not one of the fused pairs {self.pairs}")
        return [self.pairs.index(t)]

    def _mixing(self, sel_pairs: list[int] | None) -> tuple[Tensor, Tensor]:
        """→ ``W`` ``(k·(Q+1))×(M·(K+1))`` (averaging over the ``k`` pairs folded in) and the gather
        index ``(k·(Q+1))`` of the second members' expansions."""
        a = self.coefficients()
        sel, idx = self.sel, self.idx_b
        if sel_pairs is not None:
            a, sel, idx = a[sel_pairs], sel[sel_pairs], idx[sel_pairs]
        k = a.shape[0]
        w = torch.einsum("kpq,kpc->kqc", a, sel).reshape(-1, sel.shape[-1]) * (1.0 / k)
        return w, idx.reshape(-1)

    # -- graph stages ---------------------------------------------------------------------------
    def base_graphs(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Base cosine graphs ``B×M×N×N`` (after the optional projection; padded and all-zero
        nodes have zero rows/cols). ``present`` is accepted for symmetry but not applied here."""
        lst, mask, _ = self._inputs(feats, mask, present)
        return self._base_graphs(lst, mask)

    def _base_graphs(self, lst: list[Tensor], mask: Tensor) -> Tensor:
        gs = []
        for i, x in enumerate(lst):
            node = mask
            if self.proj is not None:
                valid = ((x * x).sum(dim=-1) > 0).to(x.dtype)  # all-zero row = missing clip
                node = mask * valid
                x = self.proj[i](x)
            gs.append(cosine_graph(x, node))
        return torch.stack(gs, dim=1)

    def node_signals(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        """Per-representation node signals ``B×M×N×k`` (``u_m`` of every real clip; padded and
        missing (all-zero) clips give 0; ``present`` NOT applied) — what
        :class:`fusewatch.engines.serving.state.CameraGraphState` stores and the graphs-in form takes as ``U``."""
        if self.node_enc is None:
            raise ValueError("node_dim = 0: this model has no node branch")
        lst, mask, _ = self._inputs(feats, mask, present)
        return self._node_signals(lst, mask)

    def _node_signals(self, lst: list[Tensor], mask: Tensor) -> Tensor:
        assert self.node_enc is not None
        us = []
        for enc, x in zip(self.node_enc, lst):
            valid = ((x * x).sum(dim=-1, keepdim=True) > 0).to(x.dtype)
            us.append(enc(x) * valid * mask.unsqueeze(-1))
        return torch.stack(us, dim=1)

    def _node_matrix(self, u: Tensor, mask: Tensor, present: Tensor) -> Tensor:
        """``u`` ``B×M×N×k`` → ``U`` ``B×N×(M·k)`` (times ``present``, padded rows re-zeroed; no
        Shape-driven ops)."""
        m, n, k = self.num_reps, self.window, self.node_dim
        u = u * present.reshape(-1, m, 1, 1) * mask.reshape(-1, 1, n, 1)
        return u.permute(0, 2, 1, 3).reshape(-1, n, m * k)

    def expansions(self, r: Tensor, mask: Tensor, present: Tensor) -> Tensor:
        """``r`` ``B×M×N×N`` → ``B×M×(K+1)×N×N`` (``K = max(P, Q)``)."""
        return expand_graphs(r, mask, present, self.order, self.expansion, eye=self.eye, ones_m=self.ones_m)

    def fuse(self, e: Tensor, pair: int | tuple | None = None) -> Tensor:
        """Fused graph from expansions ``e`` ``B×M×(K+1)×N×N`` → ``G`` ``B×N×N``:
        ``mean over pairs (a,b) of Σ_pq A_pq (E_a^p ⊙ E_b^q)``."""
        w, idx = self._mixing(self._pair_index(pair))
        return self.fuse_with(e, w, idx)

    def fuse_with(self, e: Tensor, w: Tensor, idx: Tensor) -> Tensor:
        """:meth:`fuse` with a precomputed mixing (``w``, ``idx`` from ``_mixing``; export folds them
        into constants)."""
        n, c = self.window, self.num_reps * (self.order + 1)
        ef = e.reshape(-1, c, n * n)
        x = torch.matmul(w, ef)  # B×(k(Q+1))×N²: Σ_p A_pq E_a^p
        eb = torch.index_select(ef, 1, idx)  # B×(k(Q+1))×N²: E_b^q
        return (x * eb).sum(dim=1).reshape(-1, n, n)

    def head_graph(self, g: Tensor, mask: Tensor) -> Tensor:
        """The head's conditioned view ``Ĝ`` of the fused graph ``g`` (``B×N×N``):
        ``standardize``: :func:`fusewatch.engines.fusion.graphs.standardize_graph` divided by ``√n`` (``n`` real
        nodes), so every real row has about unit L2 norm whatever the window fill, the expansion
        mode and the orders; ``none``: ``g`` itself. Padded rows/cols are 0 either way."""
        if self.graph_norm == "none":
            return g
        n = torch.clamp(mask.sum(dim=-1), min=1.0).reshape(-1, 1, 1)
        return standardize_graph(g, mask, self.eye) * torch.rsqrt(n)

    def head(self, g: Tensor, mask: Tensor, u: Tensor | None = None) -> Tensor:
        """Head on the fused graph ``g`` (``B×N×N``) and, with a node branch, the node signals
        ``U`` ``u`` (``B×N×(M·k)``, see :meth:`_node_matrix`) → scores ``B×N`` (times ``mask``):
        ``x_i = [Ĝ_i ‖ (P U)_i]`` → ``fc1`` → ReLU → ``fc2`` → Sigmoid, ``P`` = ``g`` row-normalised
        by its degree (:func:`fusewatch.engines.fusion.graphs.degree_normalize`)."""
        x = self.head_graph(g, mask)
        if self.node_enc is not None:
            if u is None:
                raise ValueError("this model has a node branch (node_dim > 0): node signals U are required")
            x = torch.cat([x, torch.matmul(degree_normalize(g), u)], dim=-1)
        h = self.drop(torch.relu(self.fc1(x)))
        return torch.sigmoid(self.fc2(h).reshape(-1, self.window)) * mask

    # -- entry points ---------------------------------------------------------------------------
    def fused_graph(
        self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None, pair: int | tuple | None = None
    ) -> Tensor:
        """Fused graph ``G`` ``B×N×N`` from features (for the degree-variance regulariser)."""
        lst, mask, present = self._inputs(feats, mask, present)
        return self.fuse(self.expansions(self._base_graphs(lst, mask), mask, present), pair)

    def fused_graph_from_graphs(
        self, r: Tensor, mask: Tensor, present: Tensor | None = None, pair: int | tuple | None = None
    ) -> Tensor:
        """Fused graph ``G`` ``B×N×N`` from base graphs ``r`` ``B×M×N×N``."""
        mask = mask.to(r.dtype)
        present = (
            torch.ones(r.shape[0], self.num_reps, dtype=r.dtype, device=r.device)
            if present is None
            else present.to(r.dtype)
        )
        return self.fuse(self.expansions(r, mask, present), pair)

    def _forward(self, lst: list[Tensor], mask: Tensor, present: Tensor, pair) -> tuple[Tensor, Tensor]:
        g = self.fuse(self.expansions(self._base_graphs(lst, mask), mask, present), pair)
        u = self._node_matrix(self._node_signals(lst, mask), mask, present) if self.node_enc is not None else None
        return self.head(g, mask, u), g

    def forward(
        self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None, pair: int | tuple | None = None
    ) -> Tensor:
        """Features → scores ``B×N``."""
        lst, mask, present = self._inputs(feats, mask, present)
        return self._forward(lst, mask, present, pair)[0]

    def forward_with_graph(
        self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None, pair: int | tuple | None = None
    ) -> tuple[Tensor, Tensor]:
        """One pass → ``(scores B×N, G B×N×N)`` (training: loss + regulariser without recompute;
        ``G`` is the raw fused graph)."""
        lst, mask, present = self._inputs(feats, mask, present)
        return self._forward(lst, mask, present, pair)

    def forward_graphs(
        self,
        r: Tensor,
        mask: Tensor,
        present: Tensor | None = None,
        u: Tensor | None = None,
        *,
        pair: int | tuple | None = None,
    ) -> Tensor:
        """Graphs-in entry point: ``r`` ``B×M×N×N`` base cosine graphs and (node branch) ``u``
        ``B×M×N×k`` node signals (as produced by :class:`fusewatch.engines.serving.state.CameraGraphState` /
        :meth:`node_signals`), ``mask`` ``B×N``, ``present`` ``B×M`` → scores ``B×N``. Entries of
        padded nodes in ``r`` and ``u`` are ignored (re-masked); ``present`` is applied to ``u``."""
        mask = mask.to(r.dtype)
        present = (
            torch.ones(r.shape[0], self.num_reps, dtype=r.dtype, device=r.device)
            if present is None
            else present.to(r.dtype)
        )
        g = self.fuse(self.expansions(r, mask, present), pair)
        um = None
        if self.node_enc is not None:
            if u is None:
                raise ValueError("this model has a node branch (node_dim > 0): forward_graphs needs u")
            if not _exporting() and tuple(u.shape[1:]) != (self.num_reps, self.window, self.node_dim):
                raise ValueError(
                    f"u: expected shape (B, {self.num_reps}, {self.window}, {self.node_dim}), got {tuple(u.shape)}"
                )
            u = u.to(r.dtype)
            um = self._node_matrix(torch.where(mask.reshape(-1, 1, self.window, 1) > 0.5, u, 0.0), mask, present)
        return self.head(g, mask, um)

    def projectors(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """numpy projections for :class:`fusewatch.engines.serving.state.CameraGraphState` (empty if
        ``proj_dim == 0``): ``{name: f(x ``...×d_m``) -> ``...×proj_dim``}``."""
        if self.proj is None:
            return {}
        return {n: numpy_linear(lin) for n, lin in zip(self.names, self.proj)}

    def node_encoders(self) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
        """numpy node encoders ``u_m`` for :class:`fusewatch.engines.serving.state.CameraGraphState` (empty if
        ``node_dim == 0``): ``{name: f(x ``...×d_m``) -> ``...×node_dim``}``."""
        if self.node_enc is None:
            return {}
        return {n: numpy_linear(lin) for n, lin in zip(self.names, self.node_enc)}
