"""Source URIs: classify a URI (file, RTSP, HTTP(S), other FFmpeg network protocols, V4L2) and
build the FFmpeg options (timeouts in microseconds) that open it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import SourceError

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
SUPPORTED_SCHEMES = NETWORK_SCHEMES + ("file", "v4l2")
LIVE_PROBE_OPTIONS = {"analyzeduration": "1000000", "probesize": "1000000"}
"""Live streams: probe 1 s instead of FFmpeg's 5 s so the first frame comes quickly."""


@dataclass
class SourceSpec:
    """A parsed source URI: what to open and how (``options``: FFmpeg AVOptions, timeouts in µs)."""

    uri: str
    kind: str
    """``file``, ``rtsp``, ``http``, ``v4l2`` or ``stream`` (other FFmpeg network protocols)."""
    target: str
    """What is passed to FFmpeg: a path, URL or device."""
    live: bool
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)


def _us(seconds: float) -> str:
    """Seconds → FFmpeg's integer microseconds, as a string option value."""
    return str(int(round(seconds * 1_000_000)))


def parse_source(uri: str, cfg=None) -> SourceSpec:
    """Classify ``uri`` and build FFmpeg options; raises :class:`SourceError` for unsupported
    schemes and missing files/devices. ``cfg`` is a :class:`~fusewatch.stream.config.SourceConfig`."""
    if cfg is None:
        from ..config import SourceConfig

        cfg = SourceConfig()
    uri = str(uri).strip()
    if not uri:
        raise SourceError("source: empty URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if len(scheme) == 1:  # Windows drive letter
        scheme = ""
    sock_us = _us(cfg.socket_timeout)
    if scheme in ("", "file"):
        path = parts.path if scheme == "file" else uri
        if path.startswith("/dev/video"):
            return parse_source("v4l2://" + path, cfg)
        p = Path(path)
        if not p.exists():
            raise SourceError(f"source {uri}: no such file")
        if p.is_dir():
            raise SourceError(f"source {uri}: is a directory, not a video file")
        if not os.access(p, os.R_OK):
            raise SourceError(f"source {uri}: file is not readable")
        return SourceSpec(uri, "file", str(p), live=False)
    if scheme == "v4l2":
        rest = (parts.netloc + parts.path) or ""
        if rest.isdigit():
            dev = f"/dev/video{rest}"
        elif rest.startswith("/dev/"):
            dev = rest
        elif rest.startswith("dev/"):
            dev = "/" + rest
        else:
            raise SourceError(f"source {uri}: expected v4l2://N, v4l2:///dev/videoN or /dev/videoN")
        if not Path(dev).exists():
            raise SourceError(f"source {uri}: no such device {dev}")
        return SourceSpec(uri, "v4l2", dev, live=True, format="v4l2")
    if scheme not in NETWORK_SCHEMES:
        if Path(uri).exists():  # a file name that merely contains a colon
            return parse_source("file://" + str(Path(uri).resolve()), cfg)
        raise SourceError(
            f"source {uri}: unsupported URI scheme {scheme + '://'!r} "
            f"(supported: file paths, {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}, "
            "/dev/videoN)"
        )
    if not parts.netloc:
        raise SourceError(f"source {uri}: missing host")
    if scheme in ("rtsp", "rtsps"):
        # FFmpeg >= 5: rtsp ``timeout`` is the socket I/O timeout in microseconds (was ``stimeout``)
        opts = {"rtsp_transport": cfg.rtsp_transport, "timeout": sock_us, "rw_timeout": sock_us, **LIVE_PROBE_OPTIONS}
        return SourceSpec(uri, "rtsp", uri, live=True, options=opts)
    if scheme in ("http", "https"):
        opts = {"timeout": sock_us, "rw_timeout": sock_us, "reconnect": "0", **LIVE_PROBE_OPTIONS}
        return SourceSpec(uri, "http", uri, live=True, options=opts)
    opts = {"rw_timeout": sock_us, **LIVE_PROBE_OPTIONS}
    if scheme in ("udp", "tcp", "srt", "rtp"):
        opts["timeout"] = sock_us
    return SourceSpec(uri, "stream", uri, live=True, options=opts)
