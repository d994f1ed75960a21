"""Frame-level anomaly-detection metrics, computed the standard way.

Protocol (as in Sultani et al. 2018 / RTFM / LEGO evaluation code):

1. every clip score is expanded to the frames the clip covers (``clip_ranges``: 0-based *inclusive*
   ``(start, end)`` frame indices, one per clip); a frame covered by several clips (overlapping clips)
   takes the mean of their scores; a frame covered by no clip (gaps, tail frames) takes the score of
   the nearest covered frame, i.e. of the nearest clip;
2. frame scores and 0/1 frame labels of all test videos are concatenated (pooled);
3. ROC-AUC = ``sklearn.metrics.roc_auc_score`` and AP = ``sklearn.metrics.average_precision_score``
   over the pooled frames.

:func:`trapezoid_auc` integrates a given ROC curve (``fpr``, ``tpr``) with the trapezoid rule, e.g.
the curves stored by the original UCF-Crime MATLAB evaluation (``X``/``Y`` in ``*.mat`` files).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

AP_KIND = "sklearn.average_precision_score"


def trapezoid_auc(fpr: Sequence[float] | np.ndarray, tpr: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve given as points (``fpr``, ``tpr``), by the trapezoid rule.

    Points are integrated in order of increasing ``fpr`` (ties keep increasing ``tpr``), so curves
    stored in either direction give the same area.
    """
    x = np.asarray(fpr, dtype=np.float64).ravel()
    y = np.asarray(tpr, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"trapezoid_auc: fpr and tpr differ in length ({x.size} vs {y.size})")
    if x.size < 2:
        raise ValueError("trapezoid_auc: need at least two points")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("trapezoid_auc: fpr/tpr contain NaN or inf")
    dx = np.diff(x)
    if np.all(dx >= 0):
        pass
    elif np.all(dx <= 0):
        x, y = x[::-1], y[::-1]
    else:
        order = np.lexsort((y, x))
        x, y = x[order], y[order]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def expand_to_frames(
    clip_scores: Sequence[float] | np.ndarray, clip_ranges: Sequence[tuple[int, int]], n_frames: int
) -> np.ndarray:
    """Per-frame scores (float64, ``(n_frames,)``) from per-clip scores.

    ``clip_ranges[t] = (start, end)``: 0-based inclusive frame range of clip ``t`` (parts outside
    ``[0, n_frames)`` are ignored). Overlaps are averaged; uncovered frames take the nearest clip's
    score (ties: the earlier clip).
    """
    s = np.asarray(clip_scores, dtype=np.float64).ravel()
    if len(clip_ranges) != s.size:
        raise ValueError(f"expand_to_frames: {s.size} clip scores but {len(clip_ranges)} clip ranges")
    n_frames = int(n_frames)
    if n_frames <= 0:
        return np.zeros(0, dtype=np.float64)
    if s.size == 0:
        raise ValueError("expand_to_frames: no clip scores for a video with frames")
    # difference arrays: O(T + n_frames) whatever the clip lengths
    acc = np.zeros(n_frames + 1, dtype=np.float64)
    cnt = np.zeros(n_frames + 1, dtype=np.int64)
    r = np.asarray(clip_ranges, dtype=np.int64).reshape(-1, 2)
    lo = np.clip(r[:, 0], 0, n_frames)
    hi = np.clip(r[:, 1] + 1, 0, n_frames)
    ok = hi > lo
    np.add.at(acc, lo[ok], s[ok])
    np.add.at(acc, hi[ok], -s[ok])
    np.add.at(cnt, lo[ok], 1)
    np.add.at(cnt, hi[ok], -1)
    tot = np.cumsum(acc)[:n_frames]
    c = np.cumsum(cnt)[:n_frames]
    out = np.empty(n_frames, dtype=np.float64)
    covered = c > 0
    out[covered] = tot[covered] / c[covered]
    if not covered.all():
        idx = np.flatnonzero(covered)
        if idx.size == 0:
            # no clip overlaps the frame range at all: nearest clip by distance to its range
            frames = np.arange(n_frames)
            mid_lo, mid_hi = r[:, 0], r[:, 1]
            dist = np.maximum(mid_lo[None, :] - frames[:, None], 0) + np.maximum(frames[:, None] - mid_hi[None, :], 0)
            return s[np.argmin(dist, axis=1)].astype(np.float64)
        missing = np.flatnonzero(~covered)
        pos = np.searchsorted(idx, missing)
        left = idx[np.clip(pos - 1, 0, idx.size - 1)]
        right = idx[np.clip(pos, 0, idx.size - 1)]
        use_left = ((np.abs(missing - left) <= np.abs(right - missing)) & (pos > 0)) | (pos >= idx.size)
        nearest = np.where(use_left, left, right)
        out[missing] = out[nearest]
    return out


def _binary_ok(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """``sklearn.metrics.roc_auc_score``; NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).ravel().astype(np.int64)
    if not _binary_ok(y):
        return math.nan
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64).ravel()))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """``sklearn.metrics.average_precision_score``; NaN when there is no positive."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels).ravel().astype(np.int64)
    if y.size == 0 or y.sum() == 0:
        return math.nan
    return float(average_precision_score(y, np.asarray(scores, dtype=np.float64).ravel()))


def roc_curve_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of ``sklearn.metrics.roc_curve`` (empty arrays when only one class)."""
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).ravel().astype(np.int64)
    if not _binary_ok(y):
        return np.zeros(0), np.zeros(0)
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=np.float64).ravel())
    return fpr, tpr


def frame_gt_from_spans(n_frames: int, spans: Iterable[tuple[int, int]], one_based: bool = True) -> np.ndarray:
    """0/1 uint8 frame labels from inclusive ``(start, end)`` spans (negative starts = no span).

    ``one_based``: spans count frames from 1 (UCF-Crime ``Temporal_Anomaly_Annotation.txt``); ends past
    the last frame are clipped.
    """
    gt = np.zeros(int(n_frames), dtype=np.uint8)
    off = 1 if one_based else 0
    for s, e in spans:
        if s is None or e is None or s < 0 or e < 0:
            continue
        lo, hi = max(int(s) - off, 0), min(int(e) - off, n_frames - 1)
        if hi >= lo:
            gt[lo : hi + 1] = 1
    return gt


def pooled_frame_metrics(
    items: Iterable[tuple[np.ndarray, Sequence[tuple[int, int]], np.ndarray]], with_curve: bool = False
) -> dict:
    """Pooled frame-level metrics over videos given as ``(clip_scores, clip_ranges, frame_gt)``.

    Returns ``{"auc", "ap", "frames", "abnormal_frames", "videos"}`` (+ ``"fpr"``, ``"tpr"`` when
    ``with_curve``); ``auc``/``ap`` are NaN when undefined (a single class over all frames).
    """
    all_s, all_y = [], []
    n = 0
    for scores, ranges, gt in items:
        gt = np.asarray(gt).ravel()
        all_s.append(expand_to_frames(scores, ranges, gt.size))
        all_y.append((gt > 0).astype(np.uint8))
        n += 1
    s = np.concatenate(all_s) if all_s else np.zeros(0)
    y = np.concatenate(all_y) if all_y else np.zeros(0, dtype=np.uint8)
    out = {
        "auc": roc_auc(y, s),
        "ap": average_precision(y, s),
        "frames": int(y.size),
        "abnormal_frames": int(y.sum()),
        "videos": n,
    }
    if with_curve:
        out["fpr"], out["tpr"] = roc_curve_points(y, s)
    return out


def video_level_metrics(video_scores: Sequence[float], video_labels: Sequence[int]) -> dict:
    """Video-level ROC-AUC / AP (one score per video, e.g. its max clip score)."""
    s = np.asarray(video_scores, dtype=np.float64)
    y = np.asarray(video_labels, dtype=np.int64)
    return {"auc": roc_auc(y, s), "ap": average_precision(y, s), "videos": int(y.size), "abnormal_videos": int(y.sum())}


def nan_to_none(x):
    """JSON-friendly float: NaN/inf → None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
