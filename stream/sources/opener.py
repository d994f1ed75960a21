"""Opening a source: PyAV first, OpenCV as the fallback; one-shot probing of a file's properties
and its fixed wall-clock anchor for replay."""

from __future__ import annotations

import os

from .errors import SourceError
from .opencv_reader import OpenCVReader
from .pyav_reader import PyAVReader
from .reader import Reader
from .uri import SourceSpec, parse_source


def _capability_error(e: Exception) -> bool:
    """PyAV's FFmpeg lacks something (protocol, demuxer, decoder, option) that OpenCV may have."""
    import av

    names = (
        "ProtocolNotFoundError",
        "DemuxerNotFoundError",
        "DecoderNotFoundError",
        "PatchWelcomeError",
        "OptionNotFoundError",
        "FilterNotFoundError",
    )
    return any(isinstance(e, getattr(av.error, n)) for n in names if hasattr(av.error, n))


def open_reader(spec: SourceSpec, cfg, want_audio: bool = True) -> Reader:
    """PyAV first; OpenCV only when PyAV cannot open the source (not for network errors)."""
    try:
        return PyAVReader(spec, cfg, want_audio)
    except SourceError:
        raise
    except Exception as e:
        first = f"{type(e).__name__}: {e}"
        if spec.live and spec.kind != "v4l2" and not _capability_error(e):
            # connection/protocol failures: OpenCV would only repeat them (same FFmpeg underneath)
            raise SourceError(f"source {spec.uri}: cannot open ({first})") from None
        try:
            return OpenCVReader(spec, cfg)
        except Exception:
            raise SourceError(f"source {spec.uri}: cannot open ({first})") from None


def probe(uri: str, cfg=None) -> dict:
    """Open a (file) source once and return its properties: fps, width, height, frames, audio_rate,
    creation_time, backend."""
    if cfg is None:
        from ..config import SourceConfig

        cfg = SourceConfig()
    spec = parse_source(uri, cfg)
    r = open_reader(spec, cfg, want_audio=True)
    try:
        return {
            "fps": r.fps,
            "width": r.width,
            "height": r.height,
            "frames": r.header_frames,
            "audio_rate": r.audio_rate,
            "creation_time": r.creation_time,
            "backend": r.backend,
        }
    finally:
        r.close()


def file_anchor(path: str | os.PathLike) -> float:
    """Fixed wall-clock anchor of a file for replay: container ``creation_time`` metadata, else
    the file's mtime."""
    try:
        t = probe(str(path)).get("creation_time")
    except SourceError:
        t = None
    return float(t) if t else float(os.stat(path).st_mtime)
