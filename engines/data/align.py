"""Align several representations of the same videos: equal clip counts, consistent dims.

A video lacking a representation keeps the others; that representation is marked absent (the
model's ``present`` mask, :mod:`fusewatch.engines.fusion.presence`) — unless no representation is left.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np

from fusewatch.errors import DatasetError

log = logging.getLogger("fusewatch.datasets")


def _resample(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[0] == n:
        return a
    idx = np.clip(np.round(np.linspace(0, a.shape[0] - 1, n)).astype(np.int64), 0, a.shape[0] - 1)
    return a[idx]


def align_clip_counts(
    name: str, feats: dict[str, np.ndarray], reference: str | None = None, tolerance: float = 0.02
) -> tuple[dict[str, np.ndarray], int]:
    """Make all representations of one video have the same clip count (warning when they differ).

    Returns ``(feats, T)``. Counts within ``max(1, tolerance·T)`` of each other are truncated to the
    shortest; otherwise every representation is resampled (nearest clip) to the reference's count.
    """
    counts = {r: a.shape[0] for r, a in feats.items()}
    if len(set(counts.values())) <= 1:
        return feats, next(iter(counts.values()), 0)
    ref = reference if reference in feats else next(iter(feats))
    lo, hi = min(counts.values()), max(counts.values())
    desc = ", ".join(f"{r}={c}" for r, c in counts.items())
    if hi - lo <= max(1, int(math.floor(tolerance * hi))):
        log.warning("video %s: clip counts differ (%s): truncated to %d", name, desc, lo)
        return {r: a[:lo] for r, a in feats.items()}, lo
    n = counts[ref]
    log.warning("video %s: clip counts differ (%s): resampled to %d (count of %s)", name, desc, n, ref)
    return {r: _resample(a, n) for r, a in feats.items()}, n


def check_dims(per_video: Mapping[str, Mapping[str, np.ndarray]], reps: Sequence[str]) -> dict[str, int]:
    """``{rep: D}`` over ``{video: {rep: T×D}}``; ValueError when two videos disagree on a dim."""
    dims: dict[str, int] = {}
    for r in reps:
        seen: dict[int, str] = {}
        for vname, feats in per_video.items():
            if r in feats:
                seen.setdefault(int(feats[r].shape[1]), vname)
        if len(seen) > 1:
            (d1, v1), (d2, v2) = list(seen.items())[:2]
            raise DatasetError(f"representation {r}: mismatched feature dims ({v1}: {d1}, {v2}: {d2})")
        if seen:
            dims[r] = next(iter(seen))
    return dims


def assemble(
    per_rep: Mapping[str, Mapping[str, np.ndarray]], reference: str | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """{rep: {video: arr}} → ({video: {rep: arr}} aligned, dims)."""
    reps = list(per_rep)
    names: list[str] = []
    seen = set()
    for r in reps:
        for n in per_rep[r]:
            if n not in seen:
                seen.add(n)
                names.append(n)
    per_video: dict[str, dict[str, np.ndarray]] = {}
    partial = 0
    empty = [n for n in names if any(n in per_rep[r] and per_rep[r][n].shape[0] == 0 for r in reps)]
    if empty:
        log.warning("%d video(s) have no clips (e.g. %s): skipped", len(empty), empty[0])
        names = [n for n in names if n not in set(empty)]
    for n in names:
        feats = {r: per_rep[r][n] for r in reps if n in per_rep[r]}
        if len(feats) < len(reps):
            partial += 1
        per_video[n] = feats
    if partial:
        log.warning(
            "%d of %d video(s) lack some representation(s): marked absent for those videos", partial, len(names)
        )
    dims = check_dims(per_video, reps)
    out = {}
    for n, feats in per_video.items():
        out[n], _ = align_clip_counts(n, feats, reference or (reps[0] if reps else None))
    return out, dims
