"""Object-level motion: foreground blobs from background subtraction, tracked through the clip.

Each frame is converted to grey and downscaled to ``OBJ_WIDTH`` = 180 px wide (aspect kept:
360×240 → 180×120). Background subtraction is OpenCV MOG2, *per clip* so that the extractor holds no
state between clips (one instance may serve any number of cameras, like every extractor): a fresh
``BackgroundSubtractorMOG2`` (``history`` = clip length, ``varThreshold`` = 16, ``backgroundRatio`` = 0.5, no shadows) first
learns the clip's frames in order (``LEARN_PASSES`` = 2 passes), then labels every frame with the
learnt model frozen (learning rate 0). A person moving through the clip covers any one pixel for a
few of its 16 frames only, so the background Gaussians win (with OpenCV's default background ratio
0.9, a component holding a walker for 3 of 16 frames still counts as background and Ped2's
pedestrians vanish; 0.5 keeps them, measured on ``test_02``: 5–7 blobs per frame, like a temporal
median background); an object standing still for the whole
clip is background (it is not *moving*, which is what this representation is about). The mask is
cleaned with a 3×3 opening and closing; connected components (8-connected) of at least
``MIN_AREA`` = 6 px are objects.

Objects are linked frame to frame greedily by nearest centroid (gate: ``GATE_PX`` = 12 px at the
180-px scale, area ratio within 1/3..3); a chain of linked detections is a track. Per track (≥ ``MIN_TRACK`` = 3
detections; shorter chains are mostly blobs splitting and merging, with spurious jumps): median area (px at the 180-px scale), median speed (centroid displacement per
sampled-frame step, px), median relative speed (speed / bbox height: body heights per step,
roughly invariant to the distance from the camera), median aspect (height / width), median fill
(area / bbox area), mean centroid row and column in [0, 1], length (fraction of the clip's frames).

Feature vector (``dim = 4·8 + 10 = 42``, float32):

=========  ==========================================================================================
slice      content
=========  ==========================================================================================
0:32       top ``K_OBJECTS`` = 4 tracks by speed, descending; per track: log1p(area), log1p(speed),
           relative speed, log1p(aspect), fill, row, col, length; zeros where there are fewer tracks
32:42      per-clip extremes: mean and max objects per frame, log1p(max track speed), max relative
           speed, log1p(max area over detections), log1p(max aspect), log1p(min aspect) over tracks,
           mean and max foreground fraction per frame, log1p(max single-step displacement of any
           link)
=========  ==========================================================================================

Cost: MOG2 (two learning passes and one labelling pass) + morphology + components at 180×120:
~17–35 ms per 16-frame clip on one core, ~0.6× the ``flow`` extractor (``bench/results/inductive.md``).
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Extractor, check_frames
from .flow_grid import grey_small

OBJ_WIDTH = 180
LEARN_PASSES = 2
VAR_THRESHOLD = 16.0
BACKGROUND_RATIO = 0.5
MIN_AREA = 6
GATE_PX = 12.0
MIN_TRACK = 3
K_OBJECTS = 4
TRACK_DIM = 8
N_EXTREMES = 10
DIM = K_OBJECTS * TRACK_DIM + N_EXTREMES  # 42
VERSION = "objects-1"
_KERNEL = np.ones((3, 3), np.uint8)


def foreground_masks(
    greys: list[np.ndarray], var_threshold: float = VAR_THRESHOLD, passes: int = LEARN_PASSES
) -> list[np.ndarray]:
    """Per-clip MOG2 foreground masks (uint8 0/255, cleaned), one per grey frame."""
    n = len(greys)
    bs = cv2.createBackgroundSubtractorMOG2(history=max(n, 2), varThreshold=float(var_threshold), detectShadows=False)
    bs.setBackgroundRatio(BACKGROUND_RATIO)
    for _ in range(max(1, passes)):
        for g in greys:
            bs.apply(g, learningRate=-1)
    out = []
    for g in greys:
        m = bs.apply(g, learningRate=0)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _KERNEL)
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _KERNEL)
        out.append(m)
    return out


def detect(mask: np.ndarray, min_area: int = MIN_AREA) -> np.ndarray:
    """Connected components of a mask → ``(n, 6)`` rows ``cx, cy, area, w, h, fill`` (px)."""
    n, _, stats, cent = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    rows = []
    for i in range(1, n):
        x, y, w, h, a = stats[i]
        if a >= min_area:
            rows.append([cent[i][0], cent[i][1], float(a), float(w), float(h), a / float(w * h)])
    return np.asarray(rows, np.float32).reshape(-1, 6)


def link_tracks(dets: list[np.ndarray], gate: float | None = None) -> tuple[list[list[tuple[int, int]]], float]:
    """Greedy nearest-centroid linking of per-frame detections → tracks (lists of (frame, det index))
    and the largest single-step displacement of any link (px)."""
    gate = GATE_PX if gate is None else float(gate)
    tracks: list[list[tuple[int, int]]] = []
    open_: dict[int, int] = {}  # det index in previous frame → track id
    max_step = 0.0
    for t, d in enumerate(dets):
        new_open: dict[int, int] = {}
        if t > 0 and len(dets[t - 1]) and len(d):
            p = dets[t - 1]
            dist = np.hypot(d[:, None, 0] - p[None, :, 0], d[:, None, 1] - p[None, :, 1])
            ratio = d[:, None, 2] / np.maximum(p[None, :, 2], 1.0)
            dist[(ratio < 1 / 3) | (ratio > 3)] = np.inf
            dist[dist > gate] = np.inf
            used_p: set[int] = set()
            for flat in np.argsort(dist, axis=None):
                i, j = divmod(int(flat), dist.shape[1])
                if not np.isfinite(dist[i, j]):
                    break
                if i in new_open or j in used_p or j not in open_:
                    continue
                tid = open_[j]
                tracks[tid].append((t, i))
                new_open[i] = tid
                used_p.add(j)
                max_step = max(max_step, float(dist[i, j]))
        for i in range(len(d)):
            if i not in new_open:
                tracks.append([(t, i)])
                new_open[i] = len(tracks) - 1
        open_ = new_open
    return tracks, max_step


class ObjectsExtractor(Extractor):
    """Per-clip foreground objects: area, speed, aspect (layout: module docstring)."""

    name = "objects"
    dim = DIM

    def __init__(self, cfg=None, width: int | None = None) -> None:
        self.width = int(width or OBJ_WIDTH)
        if self.width < 32:
            raise ValueError(f"objects width: must be >= 32 (got {self.width})")
        self.version = f"{VERSION}-w{self.width}-mog2v{int(VAR_THRESHOLD)}b{BACKGROUND_RATIO:g}-a{MIN_AREA}"

    def detections(self, frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int]]:
        """``(masks, detections per frame, (h, w))`` at the extractor's scale."""
        greys = [grey_small(f, self.width) for f in frames]
        masks = foreground_masks(greys)
        return masks, [detect(m) for m in masks], greys[0].shape

    def tracks(self, frames: list[np.ndarray]) -> list[dict]:
        """Per-track summaries (module docstring), fastest first."""
        check_frames(frames, self.name)
        _, dets, (h, w) = self.detections(frames)
        return self._summaries(dets, h, w)[0]

    def _summaries(self, dets, h, w):
        tracks, max_step = link_tracks(dets)
        n = len(dets)
        out = []
        for tr in tracks:
            if len(tr) < MIN_TRACK:
                continue
            rec = np.stack([dets[t][i] for t, i in tr])  # L × 6
            steps = np.hypot(np.diff(rec[:, 0]), np.diff(rec[:, 1])) / np.maximum(np.diff([t for t, _ in tr]), 1)
            speed = float(np.median(steps))
            height = float(np.median(rec[:, 4]))
            out.append(
                {
                    "area": float(np.median(rec[:, 2])),
                    "speed": speed,
                    "rel_speed": speed / max(height, 1.0),
                    "aspect": float(np.median(rec[:, 4] / np.maximum(rec[:, 3], 1.0))),
                    "fill": float(np.median(rec[:, 5])),
                    "row": float(rec[:, 1].mean() / h),
                    "col": float(rec[:, 0].mean() / w),
                    "length": len(tr) / max(n, 1),
                }
            )
        out.sort(key=lambda r: -r["speed"])
        return out, max_step

    def extract(self, frames, audio=None, audio_rate=None):
        check_frames(frames, self.name)
        masks, dets, (h, w) = self.detections(frames)
        summ, max_step = self._summaries(dets, h, w)
        out = np.zeros(DIM, np.float32)
        for j, r in enumerate(summ[:K_OBJECTS]):
            o = j * TRACK_DIM
            out[o : o + TRACK_DIM] = [
                np.log1p(r["area"]),
                np.log1p(r["speed"]),
                r["rel_speed"],
                np.log1p(r["aspect"]),
                r["fill"],
                r["row"],
                r["col"],
                r["length"],
            ]
        counts = np.array([len(d) for d in dets], np.float32)
        fg = np.array([float((m > 0).mean()) for m in masks], np.float32)
        max_area = max((float(d[:, 2].max()) for d in dets if len(d)), default=0.0)
        o = K_OBJECTS * TRACK_DIM
        out[o : o + N_EXTREMES] = [
            counts.mean(),
            counts.max(),
            np.log1p(max((r["speed"] for r in summ), default=0.0)),
            max((r["rel_speed"] for r in summ), default=0.0),
            np.log1p(max_area),
            np.log1p(max((r["aspect"] for r in summ), default=0.0)),
            np.log1p(min((r["aspect"] for r in summ), default=0.0)),
            fg.mean(),
            fg.max(),
            np.log1p(max_step),
        ]
        return out
