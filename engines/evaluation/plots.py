"""Evaluation plots (matplotlib, Agg backend — no display needed).

* :func:`plot_roc`: pooled frame-level ROC curve with its AUC.
* :func:`plot_timeline`: one video's per-frame score over time, ground-truth abnormal spans shaded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def safe_filename(name: str) -> str:
    """A file-system-safe version of a video name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "video"


def spans_of(gt: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1 in a 0/1 array → ``[(start, end_exclusive), ...]``."""
    g = (np.asarray(gt).ravel() > 0).astype(np.int8)
    if g.size == 0:
        return []
    d = np.diff(np.concatenate([[0], g, [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def plot_roc(
    fpr: Sequence[float], tpr: Sequence[float], auc: float | None, path: str | Path, title: str = "Frame-level ROC"
) -> Path:
    """Save the ROC curve (``fpr``, ``tpr``) with the chance diagonal to ``path`` (PNG)."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.8, 4.8), dpi=100)
    try:
        lab = "model" if auc is None or not math.isfinite(auc) else f"AUC = {auc:.4f}"
        if len(fpr):
            ax.plot(fpr, tpr, lw=1.8, label=lab)
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def plot_timeline(
    name: str,
    frame_scores: np.ndarray,
    frame_gt: np.ndarray | None,
    path: str | Path,
    fps: float | None = None,
    auc: float | None = None,
    threshold: float | None = None,
) -> Path:
    """Save one video's per-frame anomaly score (line) with abnormal ground-truth spans shaded.

    x axis: seconds when ``fps`` is known, else frame index. ``threshold``: optional horizontal line
    (e.g. the alert ``on`` level)."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = np.asarray(frame_scores, dtype=np.float64).ravel()
    scale = 1.0 / fps if fps else 1.0
    x = np.arange(s.size) * scale
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=100)
    try:
        if frame_gt is not None:
            for i, (a, b) in enumerate(spans_of(frame_gt)):
                ax.axvspan(
                    a * scale, b * scale, color="tab:red", alpha=0.2, lw=0, label="ground truth" if i == 0 else None
                )
        ax.plot(x, s, color="tab:blue", lw=1.3, label="score")
        if threshold is not None:
            ax.axhline(threshold, color="grey", ls="--", lw=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, max(x[-1] if x.size else 1.0, scale))
        ax.set_xlabel("time (s)" if fps else "frame")
        ax.set_ylabel("anomaly score")
        t = name if auc is None or not math.isfinite(auc) else f"{name}  (AUC {auc:.3f})"
        ax.set_title(t, fontsize=10)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
