"""Feature-dataset records: clip-to-frame rules, one video's aligned features, a dataset.

Shapes: ``VideoFeatures.feats[name]`` is ``T×D_name`` float32 (``T`` clips, the same for every
representation of the video); ``frame_gt`` is ``(n_frames,)`` uint8 0/1; clip ``t`` covers the
0-based inclusive frame range ``clip_ranges()[t]``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from fusewatch.errors import DatasetError

log = logging.getLogger("fusewatch.datasets")


@dataclass(frozen=True)
class ClipRule:
    """Clip ``t`` covers frames ``[t*stride, t*stride + clip_len - 1]`` (0-based, inclusive)."""

    clip_len: int
    stride: int | None = None

    def ranges(self, num_clips: int, n_frames: int | None = None) -> list[tuple[int, int]]:
        st = self.stride or self.clip_len
        out = []
        for t in range(num_clips):
            s, e = t * st, t * st + self.clip_len - 1
            if n_frames is not None:
                e = min(e, max(n_frames - 1, s))
            out.append((s, e))
        return out


@dataclass
class VideoFeatures:
    """One video: aligned per-representation clip features and its ground truth.

    ``feats``: representation name → T×D float32 (all with the same T; a representation absent for
    this video is simply missing from the dict). ``video_label``: 1 abnormal, 0 normal, -1 unknown.
    ``frame_gt``: uint8 0/1 per frame, or None. ``clip_to_frames``: list of 0-based inclusive
    ``(start, end)`` frame ranges (one per clip), or a :class:`ClipRule` (an int ``L`` means
    ``ClipRule(L)``: clip ``t`` covers frames ``t*L .. t*L+L-1``).
    """

    name: str
    feats: dict[str, np.ndarray]
    video_label: int = -1
    frame_gt: np.ndarray | None = None
    clip_to_frames: list[tuple[int, int]] | ClipRule | int | None = None
    n_frames: int | None = None
    fps: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.clip_to_frames, (int, np.integer)) and not isinstance(self.clip_to_frames, bool):
            self.clip_to_frames = ClipRule(int(self.clip_to_frames))
        if self.frame_gt is not None:
            self.frame_gt = (np.asarray(self.frame_gt).ravel() > 0).astype(np.uint8)
            if self.n_frames is None:
                self.n_frames = int(self.frame_gt.size)

    @property
    def num_clips(self) -> int:
        for a in self.feats.values():
            return int(a.shape[0])
        return 0

    def clip_ranges(self) -> list[tuple[int, int]]:
        """Resolved 0-based inclusive frame range of every clip."""
        c = self.clip_to_frames
        T = self.num_clips
        if c is None:
            c = ClipRule(1)
        if isinstance(c, ClipRule):
            return c.ranges(T, self.n_frames)
        ranges = [(int(s), int(e)) for s, e in c]
        if len(ranges) != T:
            raise DatasetError(f"video {self.name}: {len(ranges)} clip frame ranges for {T} clips")
        return ranges

    def frames(self) -> int:
        """Frame count (``n_frames``, else the GT length, else the end of the last clip)."""
        if self.n_frames is not None:
            return int(self.n_frames)
        if self.frame_gt is not None:
            return int(self.frame_gt.size)
        r = self.clip_ranges()
        return int(r[-1][1] + 1) if r else 0


@dataclass
class FeatureDataset:
    """Videos with aligned representations. ``dims``: representation → feature dim."""

    videos: list[VideoFeatures]
    dims: dict[str, int]
    layout: str = ""
    root: str = ""
    info: dict = field(default_factory=dict)

    @property
    def representations(self) -> list[str]:
        return list(self.dims)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VideoFeatures]:
        return iter(self.videos)

    def __getitem__(self, i: int) -> VideoFeatures:
        return self.videos[i]

    def by_name(self) -> dict[str, VideoFeatures]:
        return {v.name: v for v in self.videos}

    def has_frame_gt(self) -> bool:
        return bool(self.videos) and all(v.frame_gt is not None for v in self.videos)

    def select(self, representations: Sequence[str] | None) -> FeatureDataset:
        """Keep only ``representations`` (in that order); unknown names raise ValueError."""
        if not representations:
            return self
        reps = [r.strip() for r in representations if r and r.strip()]
        unknown = [r for r in reps if r not in self.dims]
        if unknown:
            raise DatasetError(
                f"unknown representation {', '.join(unknown)} in {self.root or 'dataset'} "
                f"(available: {', '.join(self.dims) or 'none'})"
            )
        vids = []
        dropped = 0
        for v in self.videos:
            feats = {r: v.feats[r] for r in reps if r in v.feats}
            if not feats:
                dropped += 1
                continue
            vids.append(dataclasses.replace(v, feats=feats))
        if dropped:
            log.warning("%d video(s) have none of the representations %s: skipped", dropped, ", ".join(reps))
        return FeatureDataset(vids, {r: self.dims[r] for r in reps}, self.layout, self.root, dict(self.info))

    def subset(self, names: Iterable[str]) -> FeatureDataset:
        keep = set(names)
        return FeatureDataset(
            [v for v in self.videos if v.name in keep], dict(self.dims), self.layout, self.root, dict(self.info)
        )
