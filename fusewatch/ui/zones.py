"""The alert page's zone editor, server side: ``GET /api/zones`` and ``PUT /api/zones/{camera}``.

Drawn polygons go to the zones file (``alerts.zones_file``; when unset, ``<ui.data_dir>/zones.json``
— the engine must then be given ``alerts.zones_file`` = that path to use them) through
:func:`~fusewatch.engines.serving.site.write_zones_file` (validated, atomic). What the UI shows is
what the engine applies: :class:`~fusewatch.engines.serving.site.SiteZones`, ``[zones]`` overlaid
per camera by the file.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from fusewatch.engines.serving.site import SiteZones, load_zones_file, write_zones_file
from fusewatch.errors import ConfigError

log = logging.getLogger("fusewatch.ui")


class ZoneEditor:
    """Reads and writes the zones in force for the UI (a fresh :class:`SiteZones` per read: the file
    may change under the UI, and a save must show at once)."""

    def __init__(self, cfg):
        self.configured = bool(cfg.alerts.zones_file)
        self.path = Path(cfg.alerts.zones_file or Path(cfg.ui.data_dir) / "zones.json").expanduser()
        self.cfg = copy.deepcopy(cfg)
        self.cfg.alerts.zones_file = str(self.path)
        if not self.configured:
            log.info("ui: zones drawn in the UI go to %s; give the engine alerts.zones_file = that path", self.path)

    def info(self) -> dict:
        out = {"file": str(self.path), "engine_reads_file": self.configured}
        if not self.configured:
            out["hint"] = f'alerts.zones_file is not set: set alerts.zones_file = "{self.path}" for the engine'
        return out

    def site(self) -> SiteZones:
        """Raises ConfigError when the zones file is broken."""
        return SiteZones(self.cfg, check_every_s=0)

    def for_camera(self, camera: str) -> list:
        try:
            return self.site().for_camera(camera) or []
        except ConfigError:
            return self.cfg.zones.get(camera, [])

    def all(self) -> dict[str, list]:
        """``{camera: polygons}`` in force (raises ConfigError on a broken zones file)."""
        site = self.site()
        cams = sorted(set(self.cfg.zones) | set(load_zones_file(self.path)))
        return {c: p for c in cams if (p := site.for_camera(c))}

    def save(self, camera: str, body) -> list:
        """Validate the request body ``{"polygons": [...]}`` and write the camera's polygons; returns
        the camera's zones now in force. Raises ValueError (the user's mistake, one line) or
        ConfigError (the zones file on disk is broken)."""
        polys = body.get("polygons") if isinstance(body, dict) else None
        if not isinstance(polys, list):
            raise ValueError('expected a JSON object {"polygons": [[[x, y], ...], ...]}')
        if not camera or len(camera) > 256:
            raise ValueError("camera id must be 1..256 characters")
        load_zones_file(self.path)  # a broken file on disk is not the request's fault
        try:
            write_zones_file(self.path, camera, polys)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        log.info("ui: zones of camera %s saved to %s (%d polygons)", camera, self.path, len(polys))
        return self.for_camera(camera)
