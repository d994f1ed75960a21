"""Camera health from the worker's sampled frames: offline, frozen, black/blank, tamper.

:class:`HealthMonitor` looks at each sampled frame once, as a 64×48 grey thumbnail (≈ 0.1 ms):

* ``black`` — mean grey level < ``black_level`` or standard deviation < ``blank_std`` (a dark,
  uniform or covered picture) for ``black_after_s`` seconds of capture time;
* ``frozen`` — mean absolute difference to the previous sampled frame ≤ ``frozen_diff`` (grey
  levels 0..255) for ``frozen_after_s`` seconds (a stuck encoder repeating its last picture);
* ``tamper`` — the correlation of the frame's edge map (Sobel magnitude) with a slowly learned
  background edge map (exponential average, α = 0.05, learned while the state is ``ok``) stays
  below ``tamper_threshold`` for ``tamper_after_s`` seconds (camera turned, view blocked or
  defocused); after ``relearn_s`` in ``tamper`` the new view becomes the background (``ok``);
* ``offline`` — no frame from the source for ``offline_after_s`` seconds of system time
  (:meth:`HealthMonitor.idle`), or the source gave up (:meth:`HealthMonitor.source_failed`).

Precedence: offline > black > frozen > tamper. Each change of state calls ``emit(state,
previous, since, detail)`` once; ``ok`` after a problem is the recovery event.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

Emit = Callable[[str, str, float, str], None]
WARMUP_FRAMES = 10
BG_ALPHA = 0.05


def _thumb(image: np.ndarray) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return cv2.resize(g, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def _edges(g: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-6 else 1.0


class HealthMonitor:
    """Per-camera health state machine (``cfg``: the ``[health]`` section)."""

    def __init__(self, cfg, emit: Emit):
        self.cfg, self.emit = cfg, emit
        self.state = "ok"
        self.since = 0.0
        self.events: list[tuple[str, str, float, str]] = []
        self.prev: np.ndarray | None = None
        self.bg: np.ndarray | None = None
        self.n_bg = 0
        self.dark_since: float | None = None
        self.frozen_since: float | None = None
        self.changed_since: float | None = None
        self.last_frame_mono: float | None = None

    def _set(self, state: str, since: float, detail: str) -> None:
        if state == self.state:
            return
        prev, self.state, self.since = self.state, state, since
        self.events.append((state, prev, since, detail))
        self.emit(state, prev, since, detail)

    # -- inputs -------------------------------------------------------------------------------
    def frame(self, pts: float, wall: float, image: np.ndarray, mono: float | None = None) -> str:
        """One sampled frame (``pts`` s since the stream start, ``wall`` Unix s, H×W×3 RGB uint8);
        returns the state after it."""
        c = self.cfg
        self.last_frame_mono = time.monotonic() if mono is None else mono
        if self.state == "offline":
            self._set("ok", wall, "frames again")
            self.prev, self.dark_since, self.frozen_since, self.changed_since = None, None, None, None
        g = _thumb(image)
        mean, std = float(g.mean()), float(g.std())
        dark = mean < c.black_level or std < c.blank_std
        self.dark_since = (self.dark_since if self.dark_since is not None else (pts, wall)) if dark else None
        same = self.prev is not None and float(np.abs(g - self.prev).mean()) <= c.frozen_diff
        if same:
            self.frozen_since = self.frozen_since or (self.prev_pts, self.prev_wall)
        else:
            self.frozen_since = None
        self.prev, self.prev_pts, self.prev_wall = g, pts, wall
        corr = 1.0
        if not dark:
            e = _edges(g)
            if self.bg is None:
                self.bg = e
            if self.n_bg >= WARMUP_FRAMES:
                corr = _corr(e, self.bg)
            changed = corr < c.tamper_threshold
            self.changed_since = (self.changed_since or (pts, wall)) if changed else None
            if self.state == "tamper" and self.changed_since and pts - self.changed_since[0] >= c.relearn_s:
                self.bg, self.changed_since = e, None  # accept the new view
            if self.changed_since is None and self.state in ("ok", "tamper"):
                self.bg = e if self.n_bg == 0 else (1 - BG_ALPHA) * self.bg + BG_ALPHA * e
                self.n_bg += 1
        if self.dark_since and pts - self.dark_since[0] >= c.black_after_s:
            self._set(
                "black",
                self.dark_since[1],
                f"dark or blank picture (mean {mean:.1f}, std {std:.1f}) for {pts - self.dark_since[0]:.1f} s",
            )
        elif self.frozen_since and pts - self.frozen_since[0] >= c.frozen_after_s:
            self._set("frozen", self.frozen_since[1], f"identical frames for {pts - self.frozen_since[0]:.1f} s")
        elif self.changed_since and pts - self.changed_since[0] >= c.tamper_after_s:
            self._set(
                "tamper",
                self.changed_since[1],
                f"view differs from the learned scene "
                f"(edge correlation {corr:.2f}) for "
                f"{pts - self.changed_since[0]:.1f} s",
            )
        elif not (self.dark_since or self.frozen_since or self.changed_since):
            self._set("ok", wall, "picture normal again")
        return self.state

    def idle(self, now_mono: float | None = None) -> str:
        """No frame right now: ``offline`` once none came for ``offline_after_s``."""
        now = time.monotonic() if now_mono is None else now_mono
        if self.last_frame_mono is None:
            self.last_frame_mono = now  # counting from the start of the worker
        gap = now - self.last_frame_mono
        if gap >= self.cfg.offline_after_s:
            self._set("offline", time.time() - gap, f"no frame from the source for {gap:.1f} s")
        return self.state

    def source_failed(self, detail: str) -> None:
        """The source ended with an error (gave up reconnecting, no frames)."""
        gap = time.monotonic() - (self.last_frame_mono or time.monotonic())
        self._set("offline", time.time() - gap, detail[:300])
