"""Stand-in feature extractors for tests that exercise the pipeline, not the backbones."""
from __future__ import annotations

import numpy as np

from fusewatch.stream.extractors.base import Extractor


class MeanRGB(Extractor):
    """Stand-in extractor: mean RGB of the clip (subsampled), deterministic and cheap."""

    name, dim, version = "meanrgb", 3, "t1"

    def extract(self, frames, audio, audio_rate):
        return np.stack(frames)[:, ::4, ::4].reshape(-1, 3).mean(0).astype(np.float32)


def tone_video(path, ffmpeg: str):
    """A 3.5 s 96×64 test pattern (10 fps, H.264) with a 440 Hz mono AAC tone (16 kHz) at ``path``."""
    import subprocess

    subprocess.run([ffmpeg, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=10",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000", "-t", "3.5",
                    "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(path)], check=True, timeout=60)
    return path
