"""Seeding and the stratified train/validation split of training videos.

Reproducibility: ``cfg.train.seed`` seeds ``random``, ``numpy`` and ``torch`` (and the split, window
offsets and batch order through one ``numpy.random.Generator``); same data + config + seed → same
weights on the same machine/torch build.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch

from fusewatch.engines.data.records import VideoFeatures


def set_seed(seed: int) -> np.random.Generator:
    """Seed ``random``, ``numpy`` and ``torch``; return a fresh numpy Generator for the run."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def stratified_split(
    videos: Sequence[VideoFeatures], val_fraction: float, rng: np.random.Generator
) -> tuple[list[VideoFeatures], list[VideoFeatures]]:
    """Split by video label: ``round(val_fraction · n_c)`` videos of each class ``c`` go to validation
    (at least one when ``val_fraction > 0`` and the class has >= 2 videos; never the last one)."""
    if val_fraction <= 0:
        return list(videos), []
    train, val = [], []
    for lab in sorted({v.video_label for v in videos}):
        group = [v for v in videos if v.video_label == lab]
        idx = rng.permutation(len(group))
        k = int(round(val_fraction * len(group)))
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        else:
            k = 0
        val += [group[i] for i in sorted(idx[:k])]
        train += [group[i] for i in sorted(idx[k:])]
    order = {v.name: i for i, v in enumerate(videos)}
    return sorted(train, key=lambda v: order[v.name]), sorted(val, key=lambda v: order[v.name])
