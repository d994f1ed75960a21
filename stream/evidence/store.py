"""The evidence store on disk, as the writer (:mod:`.writer`) uses it; every alert field is untrusted.

* :func:`evidence_paths`: the files of an alert, named from the percent-encoded camera and alert id
  (:func:`.segments.camera_dir_name`: no ``/``, no leading ``.``, ASCII only); :func:`ensure_inside`
  checks a path resolves inside the evidence folder; :class:`UnsafeName` for what cannot be named
  safely (empty, not text, a lone surrogate, longer than :data:`MAX_NAME_CHARS` once encoded, a link
  leading out).
* :class:`Tally`: counts by reason of the records, events and jobs the writer skipped or failed,
  logging the 1st, 10th, 100th … of each reason (a flood of bad records cannot flood the log).
* :func:`file_info` (what an evidence record says of a file), :func:`apply_retention` (age, size).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .segments import camera_dir_name

MAX_NAME_CHARS = 200
"""Longest encoded camera directory or alert file stem (file systems allow 255 bytes a name)."""


class UnsafeName(ValueError):
    """A camera or alert id that cannot name a file inside the evidence folder."""


def short(value: object, n: int = 80) -> str:
    """``value`` as printable ASCII-safe text of at most ``n`` characters (for log fields)."""
    text = value if isinstance(value, str) else repr(value)
    return text[:n].encode("ascii", "backslashreplace").decode("ascii")


def safe_name(text: object, what: str) -> str:
    """The file-system- and URL-safe name of ``text`` (percent-encoded, a leading ``.`` as ``%2E``;
    unchanged for ``[A-Za-z0-9_-]`` ids). Raises :class:`UnsafeName`."""
    if not isinstance(text, str) or not text:
        raise UnsafeName(f"{what} is empty or not text")
    try:
        name = camera_dir_name(text)
    except UnicodeError:
        raise UnsafeName(f"{what} is not valid Unicode text (a lone surrogate)") from None
    if len(name) > MAX_NAME_CHARS:
        raise UnsafeName(f"{what} is longer than {MAX_NAME_CHARS} characters once encoded")
    return name


def ensure_inside(root: Path, path: Path) -> Path:
    """``path`` if it resolves (links followed) strictly inside ``root``; else :class:`UnsafeName`."""
    try:
        r, p = Path(root).resolve(), Path(path).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a link loop
        raise UnsafeName(f"cannot resolve {short(str(path))}: {e}") from None
    if p == r or not p.is_relative_to(r):
        raise UnsafeName(f"{short(str(path), 300)} resolves outside the evidence folder {short(str(r), 300)}")
    return path


@dataclass(frozen=True)
class EvidencePaths:
    """Where one alert's files go: ``buffer`` (the camera's packet buffer directory), ``clip``
    (``<root>/<camera>/<id>.mp4``) and ``snapshot`` (``.jpg``), names encoded by :func:`safe_name`."""

    buffer: Path
    clip: Path
    snapshot: Path


def evidence_paths(root: Path, camera: object, alert_id: object) -> EvidencePaths:
    """The :class:`EvidencePaths` of ``alert_id`` of ``camera`` (raises :class:`UnsafeName`). Inside
    ``root`` by construction (encoded names: no ``/``, no leading ``.``); the writer still checks
    with :func:`ensure_inside` (links followed) right before it writes."""
    cam, stem = safe_name(camera, "camera"), safe_name(alert_id, "alert id")
    root = Path(root)
    return EvidencePaths(root / ".buffer" / cam, root / cam / f"{stem}.mp4", root / cam / f"{stem}.jpg")


class Tally:
    """Counts (``counts[reason]``) of what the writer skipped or failed; :meth:`note` logs the 1st,
    10th, 100th … occurrence of each reason (the first with its traceback when one is given)."""

    def __init__(self, log) -> None:
        self.log = log
        self.counts: Counter[str] = Counter()

    def note(self, reason: str, *, level: int = logging.WARNING, exc: BaseException | None = None, **fields) -> int:
        """Count one ``reason`` (a fixed text: ids and messages go in ``fields``); returns its count."""
        self.counts[reason] += 1
        n = self.counts[reason]
        if n == 1 or (n % 10 == 0 and str(n).rstrip("0") == "1"):
            extra = {"fields": {**fields, "count": n}}
            self.log.log(level, f"evidence: {reason}", extra=extra, exc_info=exc if n == 1 else None)
        return n


def file_info(path: Path, root: Path, base_url: str) -> dict:
    """``path``/``url``/``bytes``/``sha256`` of a stored evidence file."""
    data = path.read_bytes()
    rel = path.relative_to(root).as_posix()
    url = f"{base_url.rstrip('/')}/{quote(rel)}"  # a file named "cam%2F1" is the URL path "cam%252F1"
    return {"path": rel, "url": url, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def apply_retention(root: Path, max_age_days: float, max_total_mb: float) -> int:
    """Delete stored evidence older than ``max_age_days`` (file time), then the oldest alerts'
    files while the store exceeds ``max_total_mb``. Returns the number of files deleted."""
    groups: dict[Path, list[Path]] = {}
    for p in root.glob("*/*"):
        if p.parent.name == ".buffer" or p.suffix not in (".mp4", ".jpg") or not p.is_file():
            continue
        groups.setdefault(p.with_suffix(""), []).append(p)
    items = []
    for _stem, files in groups.items():
        st = [f.stat() for f in files]
        items.append((max(s.st_mtime for s in st), sum(s.st_size for s in st), files))
    items.sort(key=lambda x: x[0])
    now, n, total = time.time(), 0, sum(i[1] for i in items)
    for k, (mtime, size, files) in enumerate(items):
        too_old = now - mtime > max_age_days * 86400
        too_big = total > max_total_mb * 1e6 and k < len(items) - 1
        if not (too_old or too_big):
            continue
        for f in files:
            f.unlink(missing_ok=True)
            n += 1
        total -= size
    return n
