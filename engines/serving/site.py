"""Site setup read by the engine: per-camera thresholds (``fusewatch calibrate``) and zones.

* ``alerts.camera_thresholds_file``: JSON ``{"cameras": {cam: {"on": x, "off": y, ...}}}`` (or the
  bare ``{cam: {...}}`` mapping) — those cameras' hysteresis thresholds, winning over ``alerts.on``/
  ``off`` and the model's calibrated ones.
* ``[zones]``: camera → polygons of normalised ``[x, y]`` points where alerts may come from. Zones act
  on the clip's *anomaly map* (rows × columns of per-region scores, :mod:`.anomaly_map`):
  :func:`zone_score` keeps the map's cells whose centre lies inside a zone and returns their
  maximum. A model without a motion representation gives no map, and then zones are a no-op (the
  score passes unchanged).
* ``alerts.zones_file``: the same polygons as JSON, written by the web UI's zone editor
  (:func:`write_zones_file`); per camera it wins over ``[zones]``. :class:`SiteZones` re-reads it
  when its modification time changes (checked at most once a second), so drawn zones apply to a
  running engine without a restart.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from fusewatch.errors import ConfigError
from fusewatch.stream.config import Config


def load_thresholds_file(path: str | Path) -> dict[str, dict]:
    p = Path(path).expanduser()
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"alerts.camera_thresholds_file {p}: not found (run `fusewatch calibrate`)") from None
    except ValueError as e:
        raise ConfigError(f"alerts.camera_thresholds_file {p}: invalid JSON ({e})") from None
    cams = d.get("cameras", d) if isinstance(d, dict) else None
    if not isinstance(cams, dict):
        raise ConfigError(f'alerts.camera_thresholds_file {p}: expected {{"cameras": {{camera: {{on, off}}}}}}')
    return cams


def camera_thresholds(cfg: Config) -> dict[str, tuple[float, float]]:
    """``{camera: (on, off)}`` from ``alerts.camera_thresholds_file`` (empty when unset)."""
    path = cfg.alerts.camera_thresholds_file
    if not path:
        return {}
    out = {}
    for cam, th in load_thresholds_file(path).items():
        try:
            on, off = float(th["on"]), float(th["off"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"alerts.camera_thresholds_file: camera {cam!r} needs numeric on and off") from None
        if not (0 <= off <= on <= 1):
            raise ConfigError(f"alerts.camera_thresholds_file: camera {cam!r}: need 0 <= off <= on <= 1")
        out[str(cam)] = (on, off)
    return out


def point_in_polygon(x: float, y: float, poly: Sequence[Sequence[float]]) -> bool:
    """Even-odd rule (normalised coordinates)."""
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def zone_mask(polygons: Sequence, rows: int, cols: int) -> np.ndarray:
    """rows × cols booleans: cell centre inside any polygon."""
    m = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            x, y = (c + 0.5) / cols, (r + 0.5) / rows
            m[r, c] = any(point_in_polygon(x, y, p) for p in polygons)
    return m


def zone_score(score: float, anomaly_map, polygons: Sequence | None) -> float:
    """The clip score restricted to the allowed zones: max of the map's cells inside them (0 when the
    anomaly lies entirely outside); ``score`` unchanged without zones or without a map."""
    if not polygons or anomaly_map is None:
        return float(score)
    a = np.asarray(anomaly_map, np.float32)
    m = zone_mask(polygons, *a.shape)
    return float(a[m].max()) if m.any() else 0.0


def load_zones_file(path: str | Path) -> dict[str, list]:
    """``{camera: [polygon, ...]}`` from a zones file (``{"v": 1, "cameras": {...}}`` or the bare
    mapping); a missing file is ``{}`` (no zone drawn yet). Raises ConfigError on a bad file."""
    from pydantic import TypeAdapter, ValidationError

    from fusewatch.stream.config.ui import Zones

    p = Path(path).expanduser()
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise ConfigError(f"alerts.zones_file {p}: invalid JSON ({e})") from None
    cams = d.get("cameras", d) if isinstance(d, dict) else None
    try:
        return dict(TypeAdapter(Zones).validate_python(cams))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        raise ConfigError(f"alerts.zones_file {p}: {where}: {err.get('msg')}") from None


def write_zones_file(path: str | Path, camera: str, polygons: Sequence) -> dict[str, list]:
    """Set ``camera``'s polygons in the zones file (``[]`` removes the camera: watched everywhere),
    validated, atomically replaced; returns the file's new mapping."""
    from pydantic import TypeAdapter, ValidationError

    from fusewatch.stream.config.ui import Zones

    p = Path(path).expanduser()
    cams = load_zones_file(p)
    try:
        new = TypeAdapter(Zones).validate_python({camera: list(polygons)})
    except ValidationError as e:
        raise ConfigError(f"zones for {camera!r}: {e.errors()[0].get('msg')}") from None
    if new.get(camera):
        cams[camera] = new[camera]
    else:
        cams.pop(camera, None)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"v": 1, "cameras": cams}, indent=1) + "\n")
    tmp.replace(p)
    return cams


class SiteZones:
    """The zones in force: ``[zones]`` overlaid per camera by ``alerts.zones_file`` (re-read when it
    changes; a broken file keeps the last good zones and is logged once per change)."""

    def __init__(self, cfg: Config, check_every_s: float = 1.0):
        self.static = dict(cfg.zones)
        self.path = Path(cfg.alerts.zones_file).expanduser() if cfg.alerts.zones_file else None
        self.check_every_s = check_every_s
        self._file: dict[str, list] = {}
        self._stamp: tuple | None = None
        self._next = 0.0
        if self.path is not None:
            self._file = load_zones_file(self.path)  # a broken file at start-up is a config error
            self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()  # type: ignore[union-attr]
            return (st.st_mtime_ns, st.st_size)
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.path is None or now < self._next:
            return
        self._next = now + self.check_every_s
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._file = load_zones_file(self.path)
        except ConfigError as e:
            import logging

            logging.getLogger(__name__).warning("%s (keeping the previous zones)", e)

    def for_camera(self, camera: str) -> list | None:
        """The camera's allowed polygons, or None (watched everywhere)."""
        self._refresh()
        return self._file.get(camera) or self.static.get(camera) or None

    @property
    def any(self) -> bool:
        self._refresh()
        return bool(self.static or self._file or self.path)
