"""Reference backend: the eager PyTorch model."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from fusewatch.engines.fusion.base import FusionModel
from fusewatch.engines.fusion.lego import LegoModel
from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.serving.backends.base import Scorer


class TorchScorer(Scorer):
    """Eager PyTorch scorer (reference for parity checks).

    Args:
        model: a built :class:`fusewatch.engines.fusion.base.FusionModel` (put in eval mode here).
        meta: its metadata (default :func:`fusewatch.engines.training.checkpoint.model_meta`).
        device: torch device (``cpu``, ``cuda:0`` …). threads: ``torch.set_num_threads`` when > 0
            (process-wide setting).
    """

    backend = "torch"

    def __init__(
        self, model: FusionModel, meta: Mapping[str, Any] | None = None, device: str = "cpu", threads: int = 0
    ):
        from fusewatch.engines.training.checkpoint import model_meta

        if threads and threads > 0:
            torch.set_num_threads(int(threads))
        meta = ModelMeta.from_dict(meta) if meta and meta.get("model_version") else model_meta(model)
        forms = ("graphs", "features") if isinstance(model, LegoModel) else ("features",)
        super().__init__(meta, forms, max_batch=None)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def _t(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.device)

    def _run_graphs(self, r, mask, present, u=None):
        with torch.inference_mode():
            return (
                self.model.forward_graphs(
                    self._t(r), self._t(mask), self._t(present), None if u is None else self._t(u)
                )
                .cpu()
                .numpy()
            )

    def _run_features(self, *arrays):
        feats = [self._t(a) for a in arrays[:-2]]
        with torch.inference_mode():
            return self.model(feats, self._t(arrays[-2]), self._t(arrays[-1])).cpu().numpy()
