"""Configuration of the live web UI and site setup: ``[ui]`` and the per-camera ``[zones]`` table.

Part of the one schema (:mod:`fusewatch.stream.config`): same loading order, ``--set ui.port=8080``,
``FUSEWATCH_UI_TOKEN`` …; the access token is a ``SecretStr`` like the other secrets.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic.dataclasses import dataclass

from fusewatch.stream.config.sections import CACHE_DIR, SCHEMA, Opt, Port, _rng, _Section

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(config=SCHEMA)
class UiConfig(_Section):
    """``fusewatch ui`` / ``fusewatch demo --ui``: a web server over the alerts, scores and thumbnails topics."""

    SECTION: ClassVar[str] = "ui"
    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("token",)

    host: str = "127.0.0.1"
    """Bind address; anything but loopback needs ``token`` and ``tls_certfile``/``tls_keyfile``."""
    port: Port = 8765
    """TCP port (0: any free port, printed at start)."""
    token: Annotated[SecretStr | None, Opt] = None
    """Access token: when set every request needs ``Authorization: Bearer <token>`` (or the cookie
    that ``/?token=<token>`` sets once)."""
    tls_certfile: Annotated[str | None, Opt] = None
    tls_keyfile: Annotated[str | None, Opt] = None
    data_dir: str = str(CACHE_DIR / "ui")
    """Where the labels database (``labels.sqlite``) lives."""
    evidence_dir: str = str(CACHE_DIR / "evidence")
    """Evidence files ``<dir>/<camera>/<alert id>.mp4|.jpg`` (same folder as the workers' ``evidence.dir``)."""
    group_id: str = Field(default="fusewatch-ui", min_length=1)
    """Consumer group prefix (each UI process reads the topics from their start under a fresh id)."""
    score_history: int = _rng(600, ge=10, le=1_000_000)
    """Clip scores kept per camera (sparklines, alert timelines)."""
    max_alerts: int = _rng(5000, ge=10, le=10_000_000)
    """Alerts kept in memory (oldest closed ones dropped first)."""
    access_log: bool = True
    """One ``fusewatch.ui.access`` log line per request (method, path without query, status, ms)."""

    @model_validator(mode="after")
    def _check(self) -> UiConfig:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("ui.tls_certfile/tls_keyfile: set both or neither")
        return self

    def token_value(self) -> str | None:
        return self.token.get_secret_value() if self.token else None

    def needs_guard(self) -> str | None:
        """Why this bind address is refused, or None (loopback, or token + TLS configured)."""
        if self.host in LOOPBACK:
            return None
        missing = [n for n, v in (("ui.token", self.token_value()), ("ui.tls_certfile", self.tls_certfile)) if not v]
        return f"ui.host={self.host}: binding beyond loopback needs {' and '.join(missing)}" if missing else None


def _polygons(v: Any) -> Any:
    """``{cam: [[x,y],...]}`` (one polygon) or ``{cam: [[[x,y],...], ...]}`` (several) → the latter."""
    if not isinstance(v, dict):
        return v
    out = {}
    for cam, polys in v.items():
        if (
            isinstance(polys, list)
            and polys
            and isinstance(polys[0], list)
            and polys[0]
            and not isinstance(polys[0][0], list)
        ):
            polys = [polys]
        out[cam] = polys
    return out


Point = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=1000)]
Zones = Annotated[dict[str, list[Polygon]], BeforeValidator(_polygons)]
"""``[zones]`` table: camera id → allowed regions, polygons of normalised ``[x, y]`` points
(0..1, origin top-left). A camera without an entry is watched everywhere."""
