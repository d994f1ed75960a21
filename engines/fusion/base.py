"""Base class of the fusion models: the input convention shared by LEGO and the baselines.

All models share one input convention (see :mod:`fusewatch.engines.fusion.graphs` for the notation):

* ``feats``: ``dict[name -> Tensor B×N×d_m]`` or a list/tuple of ``M`` tensors ordered like
  ``model.names``. In a dict, a missing key (or ``None``) means the representation is absent for
  the whole batch (zeros + ``present = 0``, :func:`fusewatch.engines.fusion.presence.fill_absent`);
  extra keys are ignored.
* ``mask``: ``B×N`` (bool or float) — 1 = real node; padded nodes at the FRONT, newest clip at ``N-1``.
* ``present``: optional ``B×M`` (bool or float, default all ones) — 0 = representation missing.
* output: ``scores`` ``B×N`` in ``[0, 1]`` — one anomaly score per node; padded nodes score exactly 0
  and never influence the scores of real nodes (whatever values the padded features hold).

Models: :class:`fusewatch.engines.fusion.lego.LegoModel` (``fusion="lego"``) and the baselines of
:mod:`fusewatch.engines.fusion.baselines`; build them with :func:`fusewatch.engines.fusion.factory.build_model`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from fusewatch.engines.fusion.presence import fill_absent

FeatsLike = Mapping[str, Tensor | None] | Sequence[Tensor]


def _exporting() -> bool:
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())


class FusionModel(nn.Module):
    """Base class: input normalisation shared by every fusion model.

    Attributes:
        names: representation names (order of ``present`` columns / list inputs / ONNX inputs).
        dims: ``{name: d_m}``. window: ``N``. fusion: ``lego|concat|add|mtn``.
        config: the :class:`ModelConfig` as a plain dict. build_kwargs: extra constructor kwargs.
    """

    fusion: str = ""

    def __init__(self, names: Sequence[str], dims: Mapping[str, int], window: int):
        super().__init__()
        self.names = list(names)
        missing = [n for n in self.names if n not in dims]
        if missing:
            raise ValueError(f"dims: no dimension given for representation(s) {missing}")
        self.dims = {n: int(dims[n]) for n in self.names}
        self.window = int(window)
        self.config: dict[str, Any] = {}
        self.build_kwargs: dict[str, Any] = {}

    @property
    def num_reps(self) -> int:
        return len(self.names)

    def _inputs(self, feats: FeatsLike, mask: Tensor, present: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor]:
        """→ (list of M tensors ``B×N×d_m`` with padded rows replaced by 0, mask ``B×N`` float,
        present ``B×M`` float)."""
        if isinstance(feats, Mapping):
            ref = next((v for v in feats.values() if v is not None), None)
            dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
            b = mask.shape[0]
            lst, flags = fill_absent(
                feats, self.names, lambda n: torch.zeros(b, self.window, self.dims[n], dtype=dtype, device=mask.device)
            )
            absent = [i for i, f in enumerate(flags) if not f]
        else:
            lst, absent = list(feats), []
            if len(lst) != self.num_reps:
                raise ValueError(f"feats: expected {self.num_reps} tensors ({self.names}), got {len(lst)}")
        dtype = lst[0].dtype if lst[0].is_floating_point() else torch.float32
        mask = mask.to(dtype)
        if present is None:
            present = torch.ones(mask.shape[0], self.num_reps, dtype=dtype, device=mask.device)
        else:
            present = present.to(dtype)
        if absent:
            keep = torch.ones(self.num_reps, dtype=dtype, device=mask.device)
            keep[absent] = 0
            present = present * keep
        if not _exporting():
            b = mask.shape[0]
            if tuple(mask.shape) != (b, self.window):
                raise ValueError(f"mask: expected shape (B, {self.window}), got {tuple(mask.shape)}")
            if tuple(present.shape) != (b, self.num_reps):
                raise ValueError(f"present: expected shape ({b}, {self.num_reps}), got {tuple(present.shape)}")
            for n, v in zip(self.names, lst):
                if tuple(v.shape) != (b, self.window, self.dims[n]):
                    raise ValueError(
                        f"feats[{n!r}]: expected shape ({b}, {self.window}, {self.dims[n]}), got {tuple(v.shape)}"
                    )
        cond = (mask > 0.5).unsqueeze(-1)
        lst = [torch.where(cond, v.to(dtype), 0.0) for v in lst]
        return lst, mask, present

    def forward(self, feats: FeatsLike, mask: Tensor, present: Tensor | None = None) -> Tensor:
        raise NotImplementedError
