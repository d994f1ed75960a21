"""Helpers for testing your own fusewatch flows: a stand-in extractor, small synthetic videos, and
a one-call run of the real camera pipeline.

fusewatch's own test suite uses these; they are public so that a flow of yours (a custom
:class:`~fusewatch.stream.extractors.base.Extractor`, a consumer of feature messages, an alert
rule) can be tested the same way, without cameras, a broker or the CNN backbones::

    from fusewatch.testing import MeanRGB, collect_features, moving_box_video

    def test_my_extractor_sees_the_box_move(tmp_path):
        video = moving_box_video(tmp_path / "box.mp4")            # 4 s, 10 fps, 96×64
        msgs = collect_features(video, [MeanRGB(), MyExtractor()])
        assert [m.clip for m in msgs] == [0, 1]                     # 40 frames → two 16-frame clips
        still, moving = (m.rep("mine") for m in msgs)
        ...

* :class:`MeanRGB` — a cheap, deterministic 3-d extractor (mean colour of the clip);
* :func:`moving_box_video` — a white square on grey, still and then moving (PyAV only, no
  ``ffmpeg`` program needed);
* :func:`scene_video` — a textured scene with a moving square in parts that are ``moving``,
  ``frozen`` (the last picture repeated), ``black`` or ``shifted`` (another view) — for camera
  health (PyAV only);
* :func:`tone_video` — an FFmpeg test pattern with a 440 Hz tone (for audio paths; needs ``ffmpeg``);
* :func:`collect_features` — decode → sample → clip windows → extractors → feature messages, on
  the in-process bus, returned decoded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.extractors.base import Extractor
from fusewatch.stream.schema import FeatureMessage

__all__ = ["MeanRGB", "box_left", "collect_features", "moving_box_video", "scene_video", "tone_video"]


class MeanRGB(Extractor):
    """Stand-in extractor: mean RGB of the clip (every 4th pixel of every frame), deterministic and
    cheap. Output: (3,) float32, uint8 units (0…255)."""

    name, dim, version = "meanrgb", 3, "t1"

    def extract(
        self, frames: list[np.ndarray], audio: np.ndarray | None = None, audio_rate: int | None = None
    ) -> np.ndarray:
        out: np.ndarray = np.stack(frames)[:, ::4, ::4].reshape(-1, 3).mean(0).astype(np.float32)
        return out


def tone_video(path: str | os.PathLike[str], ffmpeg: str | None = None) -> Path:
    """Write a 3.5 s 96×64 FFmpeg test pattern (10 fps, H.264) with a 440 Hz mono AAC tone (16 kHz)
    to ``path`` and return it. ``ffmpeg``: the program (default: ``ffmpeg`` on PATH); raises
    FileNotFoundError when there is none."""
    ffmpeg = ffmpeg or shutil.which("ffmpeg")
    if not ffmpeg:
        raise FileNotFoundError("tone_video: the ffmpeg program is not installed")
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=16000",
            "-t",
            "3.5",
            "-c:v",
            "libx264",
            "-g",
            "10",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return Path(path)


def box_left(
    i: int, *, fps: int = 10, width: int = 96, box: int = 16, still_s: float = 2.0, seconds: float = 4.0
) -> int:
    """Left edge (pixels) of the box in frame ``i`` of :func:`moving_box_video` (same keywords):
    ``box // 2`` until ``still_s`` seconds, then moving right at constant speed so that it reaches
    the right margin (``width - box - box // 2``) at the last frame."""
    margin = box // 2
    t = i / fps
    if t < still_s:
        return margin
    last = (round(seconds * fps) - 1) / fps
    span = width - box - 2 * margin
    return margin + int(round(span * (t - still_s) / max(last - still_s, 1e-9)))


def moving_box_video(
    path: str | os.PathLike[str],
    *,
    seconds: float = 4.0,
    fps: int = 10,
    width: int = 96,
    height: int = 64,
    box: int = 16,
    still_s: float = 2.0,
) -> Path:
    """Write a ``width``×``height`` H.264 video (yuv420p, ``fps`` frames/s, ``round(seconds·fps)``
    frames) of a white ``box``×``box`` square on mid-grey (128) to ``path`` and return it.

    The square stays still, vertically centred at :func:`box_left` ``= box // 2``, for ``still_s``
    seconds, then moves right: a "normal" stretch followed by motion, for extractors and scorers
    that should tell the two apart. Written with PyAV (no ``ffmpeg`` program needed); ``width``
    and ``height`` must be even (4:2:0 chroma)."""
    import av

    if width % 2 or height % 2:
        raise ValueError(f"moving_box_video: width and height must be even (got {width}×{height})")
    if box > min(width, height) // 2:
        raise ValueError(f"moving_box_video: box {box} px is too large for {width}×{height}")
    n = round(seconds * fps)
    top = (height - box) // 2
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "g": str(fps)}
        for i in range(n):
            img = np.full((height, width, 3), 128, np.uint8)
            x = box_left(i, fps=fps, width=width, box=box, still_s=still_s, seconds=seconds)
            img[top : top + box, x : x + box] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return Path(path)


SCENE_PARTS = ("moving", "frozen", "black", "shifted")


def _scene(i: int, width: int, height: int, box: int, shifted: bool) -> np.ndarray:
    """Frame ``i`` of :func:`scene_video`: a grey checkerboard with diagonal stripes (edges for
    the tamper check; ``shifted``: another layout) and a white square moving left to right."""
    yy, xx = np.mgrid[0:height, 0:width]
    cell = 16 if not shifted else 7
    img = np.where(((xx // cell) + (yy // cell)) % 2 == 0, 90, 160).astype(np.uint8)
    img = np.where(((xx + (yy if not shifted else -yy)) // 24) % 3 == 0, img // 2, img).astype(np.uint8)
    img = np.repeat(img[..., None], 3, axis=2)
    x = (i * 3) % (width - box)
    top = (height - box) // 2
    img[top : top + box, x : x + box] = 255
    return img


def scene_video(
    path: str | os.PathLike[str],
    parts: Any = (("moving", 3.0), ("frozen", 3.0), ("black", 3.0)),
    *,
    fps: int = 10,
    width: int = 128,
    height: int = 96,
    box: int = 16,
) -> Path:
    """Write an H.264 video (yuv420p, ``fps`` frames/s, keyframe every second) made of ``parts``:
    ``(kind, seconds)`` with kind one of :data:`SCENE_PARTS` — ``moving`` (textured scene, a square
    moving 3 px per frame), ``frozen`` (the previous picture repeated exactly), ``black`` (all
    zero) or ``shifted`` (the scene seen differently: another texture, as if the camera turned).
    Returns ``path``. Written with PyAV (no ``ffmpeg`` program needed)."""
    import av

    last = _scene(0, width, height, box, False)
    i = 0
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18", "g": str(fps), "bf": "0"}
        for kind, seconds in parts:
            if kind not in SCENE_PARTS:
                raise ValueError(f"scene_video: unknown part {kind!r} (one of {SCENE_PARTS})")
            for _ in range(round(seconds * fps)):
                if kind in ("moving", "shifted"):
                    last = _scene(i, width, height, box, kind == "shifted")
                elif kind == "black":
                    last = np.zeros((height, width, 3), np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(last, format="rgb24")))
                i += 1
        out.mux(stream.encode(None))
    return Path(path)


def collect_features(
    source: str | os.PathLike[str],
    extractors: Iterable[Extractor],
    cfg: Any = None,
    *,
    camera: str = "test",
    wall_anchor: float = 0.0,
) -> list[FeatureMessage]:
    """Run one camera worker over ``source`` (a file or any source URI) with ``extractors`` on a
    private in-process bus and return its feature messages, decoded, in clip order.

    ``cfg``: a :class:`~fusewatch.stream.config.Config` (default: the built-in defaults, the
    environment ignored: 10 fps sampling, 16-frame clips with stride 16); ``wall_anchor``: Unix
    seconds of the first frame (fixed, so runs are reproducible). A file is read as fast as it
    decodes and loses no frame. Raises :class:`~fusewatch.stream.sources.SourceError` when the
    source fails.
    """
    from fusewatch.stream.config import load_config
    from fusewatch.stream.schema import decode_features
    from fusewatch.stream.transport import BusTransport, InProcessBus
    from fusewatch.stream.worker import Worker

    cfg = cfg if cfg is not None else load_config(env={})
    bus = InProcessBus()
    Worker(
        cfg,
        camera,
        str(source),
        transport=BusTransport(bus),
        extractors=list(extractors),
        wall_anchor=wall_anchor,
        serve_metrics=False,
    ).run()
    topic = cfg.topics.features
    records = [r for p in bus.partitions_for(topic) for r in bus.read((topic, p), 0, 1 << 30)]
    return sorted((decode_features(r.value) for r in records), key=lambda m: m.clip)


def sample_alert(camera: str = "cam-1", type: str = "new", end_clip: int = 5, **fields: Any) -> AlertMessage:
    """A well-formed alert record for tests of consumers and sinks (``fields`` override any field):
    id ``id-<camera>``, clips 3..``end_clip``, scores 0.9 / 0.95, model ``lego`` ``v1``."""
    from fusewatch.stream.schema import Evidence

    base: dict[str, Any] = dict(
        id=f"id-{camera}",
        type=type,
        camera=camera,
        score=0.9,
        peak=0.95,
        start_clip=3,
        end_clip=end_clip,
        start_time=1.7e9,
        end_time=1.7e9 + 5,
        model_name="lego",
        model_version="v1",
        backend="onnxruntime",
        evidence=[Evidence("f", 0, end_clip)],
        produced=1.7e9 + 6,
    )
    base.update(fields)
    return AlertMessage(**base)
