"""Patch-level motion: dense optical flow summarised on a spatial grid of ~20×20-px cells.

Clip-level motion statistics (:mod:`.flow`) average a small fast object away in a wide shot: a
cyclist covering 2 % of the frame barely moves the whole-frame histograms. This extractor keeps the
motion *where it happens*: every frame is converted to grey and downscaled (area interpolation) to
``GRID_FLOW_WIDTH`` = 180 px wide (aspect kept: 360×240 → 180×120), Farnebäck dense flow runs on
every consecutive pair of the clip (16 frames → 15 fields), and each field's magnitude is averaged
over a fixed ``GRID_ROWS × GRID_COLS`` = 6 × 9 grid (cells of 20×20 px at 180×120; area
interpolation = exact cell means when the size divides).

Units: magnitudes are pixels per sampled-frame step *at the 180-px scale* (independent of the
camera resolution, dependent on ``source.sample_fps``); positions are cell centres in [0, 1]
(row 0 = top, col 0 = left).

The fused LEGO graphs share one node set — the clips of a window — so this sub-clip level enters the
model as a *clip-node* representation: the clip's ``K_CELLS`` most moving cells, sorted by
magnitude (a permutation-free summary: which cell it is travels as its position), plus grid-wide
statistics and the whole grid (from which a coarse anomaly map can be drawn later).

Feature vector (``dim = 4·17 + 6 + 54 = 128``, float32):

=========  ==========================================================================================
slice      content
=========  ==========================================================================================
0:68       top ``K_CELLS`` = 4 cells by clip-mean magnitude, descending; per cell 17 values:
           log1p(mean magnitude over the clip), log1p(max over the clip's fields of the cell mean),
           log1p(temporal std of the cell mean), row centre, col centre (both in [0, 1]),
           mean flow x / y divided by (mean magnitude + 0.1 px) (signed, the dominant direction),
           coherence |mean flow| / (mean magnitude + 0.1 px) in [0, 1), fraction of the cell's pixels
           moving > 0.5 px (over all fields), 8-bin orientation histogram (45° bins, 0° = +x (right),
           90° = +y (down)), magnitude-weighted, divided by (Σ magnitude + 0.1 px × pixels)
68:74      grid statistics: log1p of the median, mean, 90th percentile and max of the cell means,
           fraction of cells with mean magnitude > 0.5 px, log1p(max over fields of the max cell)
           − log1p(max cell mean) (burstiness)
74:128     the grid: log1p(clip-mean magnitude) per cell, row-major, top-left first (6 × 9)
=========  ==========================================================================================

:meth:`FlowGridExtractor.grid` returns the grid itself (``(rows, cols)`` float32, px) and
:meth:`FlowGridExtractor.cell_series` the per-field grids (``(T−1, rows, cols)``), used by the
training-free local-motion baseline (:mod:`engines.motion_baseline`) and for anomaly maps.

Cost: 15 Farnebäck pairs at 180×120 dominate: ~70–85 ms per 16-frame clip on one core of the
development machine, ~1.3× the ``flow`` extractor (``bench/results/inductive.md``).
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Extractor, check_frames

GRID_FLOW_WIDTH = 180
GRID_ROWS = 6
GRID_COLS = 9
K_CELLS = 4
N_ORI = 8
MOVING_PX = 0.5
DIR_FLOOR = 0.1
CELL_DIM = 9 + N_ORI  # 17
N_STATS = 6
DIM = K_CELLS * CELL_DIM + N_STATS + GRID_ROWS * GRID_COLS  # 128
VERSION = "flow_grid-1"

CELLS_SLICE = slice(0, K_CELLS * CELL_DIM)
STATS_SLICE = slice(K_CELLS * CELL_DIM, K_CELLS * CELL_DIM + N_STATS)
GRID_SLICE = slice(K_CELLS * CELL_DIM + N_STATS, DIM)


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Farnebäck flow between two grey uint8 frames (h×w×2 float32, px)."""
    return cv2.calcOpticalFlowFarneback(
        a, b, None, pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5, poly_sigma=1.1, flags=0
    )


def grey_small(frame: np.ndarray, width: int) -> np.ndarray:
    """RGB uint8 → grey uint8 ``width`` px wide (aspect kept, area interpolation when shrinking)."""
    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    size = (int(width), max(8, int(round(h * width / w))))
    if (w, h) == size:
        return g
    return cv2.resize(g, size, interpolation=cv2.INTER_AREA if w > size[0] else cv2.INTER_LINEAR)


def cell_means(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean of ``a`` (h×w float32) over a ``rows×cols`` grid (area interpolation)."""
    return cv2.resize(np.ascontiguousarray(a, dtype=np.float32), (cols, rows), interpolation=cv2.INTER_AREA)


class FlowGridExtractor(Extractor):
    """Patch-level optical-flow motion (layout: module docstring)."""

    name = "flow_grid"
    dim = DIM

    def __init__(self, cfg=None, width: int | None = None) -> None:
        self.width = int(width or GRID_FLOW_WIDTH)
        if self.width < 2 * GRID_COLS:
            raise ValueError(f"flow_grid width: must be >= {2 * GRID_COLS} (got {self.width})")
        self.rows, self.cols, self.k = GRID_ROWS, GRID_COLS, K_CELLS
        self.version = f"{VERSION}-w{self.width}-g{self.rows}x{self.cols}-k{self.k}"

    # -- flow ------------------------------------------------------------------------------------
    def flows(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """The clip's flow fields (h×w×2 float32, px at the ``width`` scale)."""
        greys = [grey_small(f, self.width) for f in frames]
        return [farneback(a, b) for a, b in zip(greys, greys[1:])]

    def cell_series(self, frames: list[np.ndarray]) -> np.ndarray:
        """Per-field cell-mean magnitudes ``(len(frames)−1, rows, cols)`` float32, px."""
        check_frames(frames, self.name)
        fl = self.flows(frames)
        if not fl:
            return np.zeros((0, self.rows, self.cols), np.float32)
        return np.stack([cell_means(np.sqrt(f[..., 0] ** 2 + f[..., 1] ** 2), self.rows, self.cols) for f in fl])

    def grid(self, frames: list[np.ndarray]) -> np.ndarray:
        """The clip's grid: mean flow magnitude per cell over the clip, ``(rows, cols)`` float32, px
        (the substrate of a coarse anomaly map)."""
        s = self.cell_series(frames)
        return s.mean(0) if len(s) else np.zeros((self.rows, self.cols), np.float32)

    # -- features --------------------------------------------------------------------------------
    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        return self.features(self.flows(frames))

    def features(self, flows: list[np.ndarray]) -> np.ndarray:
        rows, cols, k = self.rows, self.cols, self.k
        out = np.zeros(DIM, np.float32)
        if not flows:
            return out
        fl = np.stack(flows).astype(np.float32, copy=False)  # T, h, w, 2
        _t = fl.shape[0]
        fx, fy = fl[..., 0], fl[..., 1]
        mag = np.sqrt(fx * fx + fy * fy)  # T, h, w
        per_field = np.stack([cell_means(m, rows, cols) for m in mag])  # T, r, c
        mean = per_field.mean(0)  # r, c
        tmax = per_field.max(0)
        tstd = per_field.std(0)
        vx = np.stack([cell_means(a, rows, cols) for a in fx]).mean(0)
        vy = np.stack([cell_means(a, rows, cols) for a in fy]).mean(0)
        moving = np.stack([cell_means((m > MOVING_PX).astype(np.float32), rows, cols) for m in mag]).mean(0)
        # per-pixel cell index at the flow resolution, for the orientation histograms of chosen cells
        h, w = mag.shape[1:]
        ri = np.minimum((np.arange(h) * rows) // h, rows - 1)
        ci = np.minimum((np.arange(w) * cols) // w, cols - 1)
        ang = (np.degrees(np.arctan2(fy, fx)) + 360.0) % 360.0
        obin = np.minimum((ang * (N_ORI / 360.0)).astype(np.int64), N_ORI - 1)
        order = np.argsort(-mean.reshape(-1), kind="stable")[:k]
        for j, cell in enumerate(order):
            r, c = divmod(int(cell), cols)
            m = float(mean[r, c])
            den = m + DIR_FLOOR
            sel_r = ri == r
            sel_c = ci == c
            cm = mag[:, sel_r][:, :, sel_c].reshape(-1)
            cb = obin[:, sel_r][:, :, sel_c].reshape(-1)
            hist = np.bincount(cb, weights=cm, minlength=N_ORI)[:N_ORI]
            hist = hist / (cm.sum(dtype=np.float64) + DIR_FLOOR * cm.size)
            o = j * CELL_DIM
            out[o : o + 9] = [
                np.log1p(m),
                np.log1p(tmax[r, c]),
                np.log1p(tstd[r, c]),
                (r + 0.5) / rows,
                (c + 0.5) / cols,
                vx[r, c] / den,
                vy[r, c] / den,
                np.hypot(vx[r, c], vy[r, c]) / den,
                moving[r, c],
            ]
            out[o + 9 : o + CELL_DIM] = hist
        flat = mean.reshape(-1)
        o = STATS_SLICE.start
        out[o : o + N_STATS] = [
            np.log1p(np.median(flat)),
            np.log1p(flat.mean()),
            np.log1p(np.percentile(flat, 90)),
            np.log1p(flat.max()),
            float((flat > MOVING_PX).mean()),
            np.log1p(per_field.max()) - np.log1p(flat.max()),
        ]
        out[GRID_SLICE] = np.log1p(flat)
        return out
