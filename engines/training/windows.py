"""Training samples: bags of clip windows laid out as the streaming engine sees them.

Samples. Every training video is cut into windows of ``N = cfg.model.window`` consecutive clips,
each laid out like the streaming engine sees it: real clips at the END of the window, front
padding + ``mask`` when fewer than ``N`` clips exist. A video of ``T <= N`` clips is one window. A
longer one is tiled by windows at a random offset (every clip in at least one window); the first
window of the video is then a front-padded partial one (``N − offset`` real clips) as in streaming,
the others are full. When that needs more than ``max_windows`` windows, a random contiguous crop of
``max_windows·N`` clips is tiled instead. The windows of one video form its bag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from fusewatch.engines.data.records import VideoFeatures
from fusewatch.engines.fusion.presence import present_flags

DEFAULT_MAX_WINDOWS = 4
"""Windows per video and training step (longer videos: a random contiguous crop)."""


@dataclass(frozen=True, eq=False)
class Window:
    """Clips ``[start, end)`` of ``video`` (at most ``N`` of them), right-aligned in an ``N``-node
    window (front padding + mask when fewer)."""

    video: VideoFeatures
    start: int
    end: int

    @property
    def length(self) -> int:
        """Real clips in the window."""
        return self.end - self.start


def training_windows(
    T: int, N: int, rng: np.random.Generator, max_windows: int = DEFAULT_MAX_WINDOWS
) -> list[tuple[int, int]]:
    """Clip spans ``[start, end)`` of one video's bag (module docstring); at most ``N`` clips each."""
    if T <= N:
        return [(0, T)]
    lo, hi = 0, T
    if math.ceil(T / N) > max_windows:
        span = max_windows * N
        lo = int(rng.integers(0, T - span + 1))
        hi = lo + span
    off = int(rng.integers(0, N))
    spans = set()
    s = lo - off
    while s < hi:
        if s < 0:  # start of the video: a front-padded partial window, as streamed
            spans.add((0, s + N))
        else:
            st = min(max(s, lo), hi - N)
            spans.add((st, st + N))
        s += N
    return sorted(spans)


def video_windows(
    video: VideoFeatures, N: int, rng: np.random.Generator, max_windows: int = DEFAULT_MAX_WINDOWS
) -> list[Window]:
    """The bag of ``video``: :func:`training_windows` of its clip count as :class:`Window` objects."""
    return [Window(video, s, e) for s, e in training_windows(video.num_clips, N, rng, max_windows)]


def window_batch(
    items: Sequence[Window], names: Sequence[str], dims: Mapping[str, int], N: int
) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Windows → ``(feats {name: B×N×d_name} float32, mask B×N, present B×M)``; real clips right-aligned
    (front padding); a representation the video lacks is zeros with ``present = 0``
    (:func:`fusewatch.engines.fusion.presence.present_flags`)."""
    B = len(items)
    feats = {n: np.zeros((B, N, dims[n]), dtype=np.float32) for n in names}
    mask = np.zeros((B, N), dtype=np.float32)
    present = np.zeros((B, len(names)), dtype=np.float32)
    for b, w in enumerate(items):
        L = w.length
        mask[b, N - L :] = 1.0
        present[b] = present_flags(w.video.feats, names)
        for m, n in enumerate(names):
            if present[b, m]:
                feats[n][b, N - L :] = w.video.feats[n][w.start : w.end]
    return ({n: torch.from_numpy(a) for n, a in feats.items()}, torch.from_numpy(mask), torch.from_numpy(present))
