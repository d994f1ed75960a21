"""Stand-in feature extractors for tests that exercise the pipeline, not the backbones."""
from __future__ import annotations

import numpy as np

from stream.extractors.base import Extractor


class MeanRGB(Extractor):
    """Stand-in extractor: mean RGB of the clip (subsampled), deterministic and cheap."""

    name, dim, version = "meanrgb", 3, "t1"

    def extract(self, frames, audio, audio_rate):
        return np.stack(frames)[:, ::4, ::4].reshape(-1, 3).mean(0).astype(np.float32)
