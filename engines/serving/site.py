"""Site setup read by the engine: per-camera thresholds (``fusewatch calibrate``) and zones.

* ``alerts.camera_thresholds_file``: JSON ``{"cameras": {cam: {"on": x, "off": y, ...}}}`` (or the
  bare ``{cam: {...}}`` mapping) — those cameras' hysteresis thresholds, winning over ``alerts.on``/
  ``off`` and the model's calibrated ones.
* ``[zones]``: camera → polygons of normalised ``[x, y]`` points where alerts may come from. Zones act
  on an *anomaly map* (rows × columns of per-region scores): :func:`zone_score` keeps the map's
  cells whose centre lies inside a zone and returns their maximum. A clip-level model (every model
  fusewatch trains today: one score per clip, no map) gives no location, so zones are a no-op for
  it — the score passes unchanged.
"""

from __future__ import annotations

import json
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
