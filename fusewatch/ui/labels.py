"""Operator labels on alerts — ``ack`` (a real anomaly, acknowledged) or ``false_positive`` — kept
in SQLite (``<ui.data_dir>/labels.sqlite``) and exported as a training folder.

Export (:func:`export_labels`): each labelled alert whose evidence clip exists
(``<evidence_dir>/<camera>/<alert id>.mp4``) is copied to ``<out>/videos/<camera>__<id>.mp4``, its
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

LABELS = ("ack", "false_positive")


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
        row = {"alert_id": alert_id, "camera": camera, "label": label, "note": note[:2000], "created": time.time()}
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


def evidence_path(evidence_dir: str | Path, camera: str, alert_id: str, ext: str) -> Path:
    """``<dir>/<camera>/<alert id>.<ext>``; ids and camera names that would leave the folder are refused."""
    for part in (camera, alert_id):
        if not part or "/" in part or "\\" in part or part in (".", "..") or "\0" in part:
            raise ValueError(f"unsafe evidence path component {part!r}")
    return Path(evidence_dir).expanduser() / camera / f"{alert_id}.{ext}"


def export_labels(store: LabelStore, evidence_dir: str | Path, out: str | Path, cfg, progress: bool = False) -> dict:
    """Write the training folder; returns ``{"videos": n, "normal": n, "abnormal": n, "missing": [ids]}``."""
    from fusewatch.errors import DataNotFoundError
    from fusewatch.stream.extract import extract_videos

    out = Path(out)
    vids = out / "videos"
    vids.mkdir(parents=True, exist_ok=True)
    names, missing = {}, []
    for aid, lab in sorted(store.all().items()):
        src = evidence_path(evidence_dir, lab["camera"], aid, "mp4")
        if not src.is_file():
            missing.append(aid)
            continue
        stem = f"{lab['camera']}__{aid}"
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
