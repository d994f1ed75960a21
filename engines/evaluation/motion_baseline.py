"""Training-free local-motion baseline: the fastest ~20×20-px cell of every frame, smoothed in time.

The reference row of the inductive benchmark (issue 12). Per video:

1. decode every frame (PyAV), grey, downscale to 180 px wide (:func:`fusewatch.stream.extractors.flow_grid.grey_small`;
   360×240 → 180×120);
2. Farnebäck flow between frame ``t−1`` and ``t`` (the :mod:`fusewatch.stream.extractors.flow_grid`
   parameters), its magnitude averaged over the 6×9 grid of 20×20-px cells
   (:data:`~fusewatch.stream.extractors.flow_grid.GRID_ROWS` × :data:`~fusewatch.stream.extractors.flow_grid.GRID_COLS`);
3. raw frame score = the largest cell mean (px per frame step); frame 0 takes frame 1's value;
4. score = moving average over ``SMOOTH_FRAMES`` = 9 frames, centred (``causal=True``: the last
   9 frames; at the ends the window is cut to the frames that exist).

Nothing is learnt or selected, so it is inductive by construction: the same numbers on any video.
It scores every decoded frame; for UCSD Ped2 (10 fps) these are exactly the labelled frames and the
frames the clip models see at ``source.sample_fps = 10``.

Cost: one Farnebäck pair at 180×120 per frame (~2–5 ms on one core).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from fusewatch.stream.extractors.flow_grid import (
    GRID_COLS,
    GRID_FLOW_WIDTH,
    GRID_ROWS,
    cell_means,
    farneback,
    grey_small,
)

SMOOTH_FRAMES = 9
CACHE_VERSION = "motion_baseline-1"


def decode_frames(path: str | Path) -> list[np.ndarray]:
    """All frames of a video file as H×W×3 uint8 RGB (PyAV)."""
    import av

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
    return out


def cell_magnitudes(
    frames: Sequence[np.ndarray], width: int = GRID_FLOW_WIDTH, rows: int = GRID_ROWS, cols: int = GRID_COLS
) -> np.ndarray:
    """Per-frame cell-mean flow magnitudes ``(n_frames, rows, cols)`` float32 (px per frame step);
    row ``t`` is the flow from frame ``t−1`` to ``t``, row 0 copies row 1 (zeros for one frame)."""
    n = len(frames)
    out = np.zeros((n, rows, cols), np.float32)
    prev = None
    for t, f in enumerate(frames):
        g = grey_small(f, width)
        if prev is not None:
            fl = farneback(prev, g)
            out[t] = cell_means(np.sqrt(fl[..., 0] ** 2 + fl[..., 1] ** 2), rows, cols)
        prev = g
    if n > 1:
        out[0] = out[1]
    return out


def smooth(x: np.ndarray, k: int = SMOOTH_FRAMES, causal: bool = False) -> np.ndarray:
    """Moving average of a 1-D series over ``k`` frames (centred, or the last ``k`` when ``causal``);
    the window is cut at the ends (no padding bias)."""
    x = np.asarray(x, np.float64).ravel()
    if k <= 1 or x.size == 0:
        return x.copy()
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(x.size)
    if causal:
        lo, hi = np.maximum(idx - k + 1, 0), idx + 1
    else:
        lo, hi = np.maximum(idx - k // 2, 0), np.minimum(idx + (k - 1 - k // 2) + 1, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def frame_scores_from_cells(cells: np.ndarray, k: int = SMOOTH_FRAMES, causal: bool = False) -> np.ndarray:
    """Baseline score per frame from :func:`cell_magnitudes` output: smoothed max over cells."""
    raw = cells.reshape(cells.shape[0], -1).max(axis=1) if cells.size else np.zeros(cells.shape[0])
    return smooth(raw, k, causal)


def video_cells(path: str | Path, cache_dir: str | Path | None = None) -> np.ndarray:
    """:func:`cell_magnitudes` of a video file, cached as ``<cache_dir>/<stem>.npy`` when given."""
    path = Path(path)
    if cache_dir is not None:
        cache = Path(cache_dir)
        f = cache / f"{path.stem}.npy"
        key = cache / "key.json"
        want = {"v": CACHE_VERSION, "w": GRID_FLOW_WIDTH, "grid": [GRID_ROWS, GRID_COLS]}
        if f.is_file() and key.is_file() and json.loads(key.read_text()) == want:
            return np.load(f)
        cache.mkdir(parents=True, exist_ok=True)
        cells = cell_magnitudes(decode_frames(path))
        np.save(f, cells)
        key.write_text(json.dumps(want))
        return cells
    return cell_magnitudes(decode_frames(path))


def baseline_scores(
    video_dir: str | Path,
    names: Iterable[str] | None = None,
    k: int = SMOOTH_FRAMES,
    causal: bool = False,
    cache_dir: str | Path | None = None,
    exts: Sequence[str] = (".mp4", ".avi", ".mkv", ".mov"),
) -> dict[str, np.ndarray]:
    """``{video stem: per-frame baseline score}`` for the videos of ``video_dir`` (all, or ``names``)."""
    vdir = Path(video_dir)
    files = {p.stem: p for p in sorted(vdir.iterdir()) if p.suffix.lower() in exts}
    want = list(names) if names is not None else list(files)
    missing = [n for n in want if n not in files]
    if missing:
        raise FileNotFoundError(f"{vdir}: no video for {', '.join(missing)}")
    return {n: frame_scores_from_cells(video_cells(files[n], cache_dir), k, causal) for n in want}


def pooled_auc(
    scores: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray], names: Iterable[str] | None = None
) -> float:
    """Frame-level ROC-AUC of per-frame ``scores`` pooled over ``names`` (default: all of ``gts``)."""
    from fusewatch.engines.evaluation import metrics as M

    names = list(names) if names is not None else list(gts)
    s = np.concatenate([np.asarray(scores[n], np.float64)[: len(gts[n])] for n in names])
    y = np.concatenate([np.asarray(gts[n]).ravel() for n in names])
    return M.roc_auc(y, s)
