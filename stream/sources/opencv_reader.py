"""The OpenCV ``VideoCapture`` fallback backend (video only), used when PyAV cannot open a source."""

from __future__ import annotations

import math
import os
from typing import Iterator

from .errors import SourceError
from .reader import Reader, VideoEvent, scaled_size
from .uri import SourceSpec


class OpenCVReader(Reader):
    """Decodes video with OpenCV's FFmpeg (or V4L2) ``VideoCapture``; no audio."""

    backend = "opencv"

    def __init__(self, spec: SourceSpec, cfg):
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # the fallback's failures are reported by us
        import cv2

        ms = int(cfg.socket_timeout * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        api = cv2.CAP_V4L2 if spec.kind == "v4l2" else cv2.CAP_FFMPEG
        old_level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.cap = cv2.VideoCapture(spec.target, api, params)
        finally:
            cv2.utils.logging.setLogLevel(old_level)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"source {spec.uri}: OpenCV cannot open it either")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 and math.isfinite(fps) else None
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        n = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.header_frames = int(n) if n and n > 0 and math.isfinite(n) else 0
        self._cv2 = cv2
        self.max_width = int(cfg.max_width)

    def __iter__(self) -> Iterator[VideoEvent]:
        cv2 = self._cv2
        n = 0
        while self.cap.grab():
            pos = self.cap.get(cv2.CAP_PROP_POS_MSEC)
            raw = pos / 1000.0 if (pos and pos > 0) or n == 0 else None

            def convert(cap=self.cap):
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    raise RuntimeError("OpenCV retrieve() failed")
                size = scaled_size(bgr.shape[1], bgr.shape[0], self.max_width)
                if size is not None:
                    bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

            n += 1
            yield VideoEvent(raw, convert)

    def close(self) -> None:
        self.cap.release()
