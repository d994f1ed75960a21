"""Operator labels on alerts — ``ack`` (a real anomaly, acknowledged) or ``false_positive`` — kept
in SQLite (``<ui.data_dir>/labels.sqlite``) and exported as a training folder.

Evidence files are where the evidence writer puts them: ``<evidence_dir>/<camera folder>/<alert id>.mp4``
and ``.jpg``, the camera folder being :func:`~fusewatch.stream.evidence.segments.camera_dir_name`
(percent-encoded: camera ``"cam 1"`` → ``cam%201/``).

Export (:func:`export_labels`): each labelled alert whose evidence clip exists is copied to
``<out>/videos/<camera folder>__<id>.mp4``, its
features are extracted into ``<out>`` with the configured extractors (``meta.json``,
``<rep>/<video>.npy`` — the layout ``fusewatch train --data`` reads) and ``<out>/labels.json``
marks every frame of a false positive normal (0) and of an acknowledged alert abnormal (1).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote

from fusewatch.stream.evidence.segments import camera_dir_name

LABELS = ("ack", "false_positive")
MAX_NOTE = 2000
"""Longest note kept (characters)."""
MAX_NAME = 255
"""Longest file or folder name (bytes; the usual NAME_MAX)."""


def clean_note(note: str) -> str:
    """``note`` cut to :data:`MAX_NOTE` characters, text that is not valid Unicode (lone surrogates)
    replaced by ``?``, so that SQLite and JSON always take it."""
    return str(note)[:MAX_NOTE].encode("utf-8", "replace").decode("utf-8")


class LabelStore:
    def __init__(self, data_dir: str | Path):
        self.dir = Path(data_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "labels.sqlite"
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS labels (
            alert_id TEXT PRIMARY KEY, camera TEXT NOT NULL, label TEXT NOT NULL
                CHECK (label IN ('ack', 'false_positive')),
            note TEXT NOT NULL DEFAULT '', created REAL NOT NULL, alert TEXT NOT NULL DEFAULT '{}')""")

    def set(self, alert_id: str, camera: str, label: str, note: str = "", alert: dict | None = None) -> dict:
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)} (got {label!r})")
        row = {"alert_id": alert_id, "camera": camera, "label": label, "note": clean_note(note), "created": time.time()}
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, camera, label, row["note"], row["created"], json.dumps(alert or {})),
            )
        return row

    def delete(self, alert_id: str) -> bool:
        with self.lock:
            return self.db.execute("DELETE FROM labels WHERE alert_id = ?", (alert_id,)).rowcount > 0

    def all(self) -> dict[str, dict]:
        with self.lock:
            rows = self.db.execute("SELECT alert_id, camera, label, note, created, alert FROM labels").fetchall()
        return {
            r[0]: {
                "alert_id": r[0],
                "camera": r[1],
                "label": r[2],
                "note": r[3],
                "created": r[4],
                "alert": json.loads(r[5] or "{}"),
            }
            for r in rows
        }

    def close(self) -> None:
        self.db.close()


def _safe_name(part: str) -> str:
    """``part`` as one file-name component; ValueError when it would leave its folder or is too long."""
    if (
        not isinstance(part, str)
        or not part
        or part in (".", "..")
        or any(c in part for c in "/\\\0")
        or len(part.encode("utf-8", "surrogatepass")) > MAX_NAME
    ):
        raise ValueError(f"unsafe evidence path component {str(part)[:60]!r}")
    return part


def evidence_path(evidence_dir: str | Path, camera: str, alert_id: str, ext: str) -> Path:
    """``<dir>/<camera_dir_name(camera)>/<alert id>.<ext>`` (the evidence writer's layout); ids that
    would leave the folder, and names too long for the file system, raise ValueError."""
    _safe_name(f"{alert_id}.{ext}")
    return Path(evidence_dir).expanduser() / _safe_name(camera_dir_name(camera)) / f"{alert_id}.{ext}"


def find_evidence(evidence_dir: str | Path, camera: str, alert_id: str, ext: str) -> Path | None:
    """The stored evidence file of an alert, or None (also for unsafe names and file-system errors).
    Looks for the file name as the writer stores it: the id itself, or the id encoded like a camera
    folder (writers that percent-encode ids)."""
    try:
        stems = dict.fromkeys((alert_id, camera_dir_name(alert_id)))
    except (ValueError, TypeError):
        return None
    for stem in stems:
        try:
            p = evidence_path(evidence_dir, camera, stem, ext)
            if p.is_file():
                return p
        except (ValueError, OSError):
            continue
    return None


def evidence_url(path: Path, evidence_dir: str | Path) -> str:
    """The UI URL (``/api/evidence/<folder>/<file>``, percent-encoded) of a stored evidence file."""
    rel = path.relative_to(Path(evidence_dir).expanduser())
    return "/api/evidence/" + "/".join(quote(part, safe="") for part in rel.parts)


def evidence_file(evidence_dir: str | Path, folder: str, name: str) -> Path:
    """The file ``<dir>/<folder>/<name>`` that an evidence URL names; ValueError unless ``folder`` is
    a camera folder as the writer names them (so never ``.buffer``) and ``name`` a plain file name."""
    if _safe_name(folder) != camera_dir_name(unquote(folder, errors="strict")):
        raise ValueError(f"not a camera folder: {folder[:60]!r}")
    return Path(evidence_dir).expanduser() / folder / _safe_name(name)


def export_labels(store: LabelStore, evidence_dir: str | Path, out: str | Path, cfg, progress: bool = False) -> dict:
    """Write the training folder; returns ``{"videos": n, "normal": n, "abnormal": n, "missing": [ids]}``."""
    from fusewatch.errors import DataNotFoundError
    from fusewatch.stream.extract import extract_videos

    out = Path(out)
    vids = out / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    names, missing = {}, []
    for aid, lab in sorted(store.all().items()):
        src = find_evidence(evidence_dir, lab["camera"], aid, "mp4")
        if src is None:
            missing.append(aid)
            continue
        stem = f"{camera_dir_name(lab['camera'])}__{aid}"
        shutil.copyfile(src, vids / f"{stem}.mp4")
        names[stem] = lab["label"]
    if not names:
        raise DataNotFoundError(f"labels export: no labelled alert has an evidence clip under {evidence_dir}")
    extract_videos([vids], out, cfg, progress=progress)
    meta = json.loads((out / "meta.json").read_text())
    labels = {}
    for stem, lab in names.items():
        v = meta["videos"][stem]
        n = int(v["frames"])
        labels[stem] = {
            "frames": n,
            "fps": v.get("fps"),
            "abnormal_frames": n if lab == "ack" else 0,
            "labels": ("1" if lab == "ack" else "0") * n,
            "source": "fusewatch ui labels",
        }
    (out / "labels.json").write_text(json.dumps(labels, indent=1))
    ab = sum(1 for v in names.values() if v == "ack")
    return {"videos": len(names), "normal": len(names) - ab, "abnormal": ab, "missing": missing}
