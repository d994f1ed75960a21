"""Coarse anomaly maps: *where* in the frame a scored clip's anomaly is.

The fused graphs score clips (one node per clip), so the map comes from the spatial grid that the
motion representations carry about every clip, not from the graphs:

* ``flow_grid`` (:mod:`fusewatch.stream.extractors.flow_grid`): 6 × 9 cells (~20×20 px at the
  180-px flow scale), slice ``74:128``, log1p of the clip-mean flow magnitude per cell — preferred;
* ``flow`` (:mod:`fusewatch.stream.extractors.flow`, in the default model): 4 × 4 cells, slices
  ``28:44`` (log1p clip-mean magnitude per cell) and ``44:60`` (log1p of the largest per-field cell
  mean over the clip).

Per cell, the evidence is how far its motion lies above normal: ``z = (x − mean) / max(std, 0.1)``
with the model's training statistics for that slice (``train.normalize = "zscore"``, stored in the
model; without them ``z = x − median over the cells``), ``e = max(z, 0)`` (the larger of the two
``flow`` blocks). The map is the clip's score spread over the cells in proportion:
``map = score · e / max(e)``, so its largest cell equals the clip score and zones that contain the
moving cell keep the score (:func:`fusewatch.engines.serving.site.zone_score`). A clip with no cell
above normal (an appearance anomaly, or none) has no location: every cell gets the clip score, so
zones never drop an alert whose place is unknown.

Rows run top → bottom, columns left → right (row 0 = top of the frame), values in [0, 1].
numpy only; a few µs per clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

GRIDS: dict[str, tuple[int, int, int, tuple[slice, ...]]] = {
    # representation → (feature dim, rows, cols, slices holding rows·cols log1p magnitudes each)
    "flow_grid": (128, 6, 9, (slice(74, 128),)),
    "flow": (80, 4, 4, (slice(28, 44), slice(44, 60))),
}
STD_FLOOR = 0.1
"""Smallest standard deviation (log1p px) a cell's motion is measured against: a cell where nothing
moved in training is not made infinitely sensitive by its zero spread."""


@dataclass(frozen=True)
class AnomalyMapper:
    """Relative location of each clip's motion anomaly from one motion representation."""

    name: str
    rows: int
    cols: int
    slices: tuple[slice, ...]
    stats: tuple[np.ndarray, np.ndarray] | None
    """``(mean, std)`` over the whole feature vector (the model's z-score statistics), or None."""

    @classmethod
    def for_model(
        cls, representations, norm: Mapping[str, tuple[np.ndarray, np.ndarray]] | None
    ) -> AnomalyMapper | None:
        """The mapper for a model with these representations (``flow_grid`` preferred over
        ``flow``), or None when the model has neither (no map: zones pass scores unchanged)."""
        for name in ("flow_grid", "flow"):
            if name in representations:
                dim, rows, cols, slices = GRIDS[name]
                st = (norm or {}).get(name)
                if st is not None and np.asarray(st[0]).shape != (dim,):
                    st = None
                return cls(name, rows, cols, slices, st)
        return None

    def relative(self, feats: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """``(rows, cols)`` float32 in [0, 1] whose largest cell is 1 (the map before it is scaled
        by the clip score), from the clip's raw features ``{name: (d,)}``; None when the clip lacks
        this representation (absent or all-zero)."""
        x = feats.get(self.name)
        if x is None:
            return None
        x = np.asarray(x, np.float32).reshape(-1)
        if x.shape[0] != GRIDS[self.name][0] or not np.any(x):
            return None
        ev = np.zeros(self.rows * self.cols, np.float32)
        for sl in self.slices:
            v = x[sl]
            if self.stats is not None:
                z = (v - self.stats[0][sl]) / np.maximum(self.stats[1][sl], STD_FLOOR)
            else:
                z = v - np.median(v)
            ev = np.maximum(ev, np.maximum(z, 0.0))
        top = float(ev.max())
        if not np.isfinite(top) or top <= 0:
            return np.ones((self.rows, self.cols), np.float32)
        return (ev / top).reshape(self.rows, self.cols).astype(np.float32)


def scaled_map(relative: np.ndarray | None, score: float) -> list[list[float]] | None:
    """The anomaly map of a clip: ``relative · score`` clipped to [0, 1], rounded to 4 decimals
    (the alert record's ``anomaly_map``); None without a relative map or for a non-finite score."""
    if relative is None or not np.isfinite(score):
        return None
    m = np.clip(relative * float(score), 0.0, 1.0)
    return [[round(float(v), 4) for v in row] for row in m]
