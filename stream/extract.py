"""Offline feature extraction: the worker's own pipeline (Worker + clip windows + extractors) with a
collecting sink instead of a topic, written as training data.

Layout of ``FEAT_DIR``::

    <representation>/<video_stem>.npy   T × D float32 (T = clips of the video)
    meta.json                           {"clip_len", "clip_stride", "sample_fps", "max_width",
                                         "representations": {name: {"dim", "version"}},
                                         "videos": {stem: {"clips", "frames", "fps", "clip_frames"}}}
    labels.json                         copied from VIDEO_DIR/labels.json when present

A representation that is absent for a video (e.g. audio of a silent video) is not written for it.
Extracting into an existing FEAT_DIR adds/replaces videos when the clip settings and extractor
versions match, and fails with a clear error otherwise; re-extracting a video with fewer extractors
keeps its other representations (when their clip count still matches). One extraction at a time
writes to a FEAT_DIR (``.extract.lock``); a second one fails at once with a clear error.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import ConfigError
from .logs import get_logger
from .sources import SourceError

VIDEO_EXTS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".mov",
    ".webm",
    ".m4v",
    ".ts",
    ".mpg",
    ".mpeg",
    ".flv",
    ".wmv",
    ".3gp",
    ".mjpeg",
    ".mjpg",
    ".h264",
    ".h265",
    ".hevc",
    ".y4m",
    ".m2ts",
    ".mts",
    ".ogv",
    ".vob",
)
NOT_VIDEO_EXTS = (".json", ".txt", ".md", ".csv", ".jpg", ".jpeg", ".png", ".npy", ".log", ".lock", ".tmp")
"""Files a video folder commonly holds beside its videos: skipped without a warning."""


def find_videos(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Expand files and directories (non-recursive, sorted) into video paths; returns
    ``(videos, directories)``."""
    videos: list[Path] = []
    dirs: list[Path] = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            dirs.append(p)
            entries = sorted(p.iterdir())
            found = [q for q in entries if q.is_file() and q.suffix.lower() in VIDEO_EXTS]
            if not found:
                raise SourceError(f"extract {p}: directory contains no video files ({', '.join(VIDEO_EXTS[:5])}, ...)")
            skipped = [
                q.name + ("/" if q.is_dir() else "")
                for q in entries
                if q not in found and not q.name.startswith(".") and q.suffix.lower() not in NOT_VIDEO_EXTS
            ]
            if skipped:  # never a silent omission: name what the scan leaves out
                get_logger("fusewatch.stream.extract").warning(
                    f"{p}: {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} not extracted (folders are not "
                    f"searched; files without a video extension are skipped; pass them by name): "
                    + ", ".join(skipped[:8])
                    + (" ..." if len(skipped) > 8 else "")
                )
            videos.extend(found)
        elif p.exists():
            videos.append(p)
        else:
            raise SourceError(f"extract {p}: no such file or directory")
    stems: dict[str, Path] = {}
    for v in videos:
        if v.stem in stems and stems[v.stem].resolve() != v.resolve():
            raise SourceError(f"extract: two videos named {v.stem!r} ({stems[v.stem]} and {v})")
        stems[v.stem] = v
    uniq: list[Path] = []
    seen: set[Path] = set()
    for v in videos:
        if v.resolve() not in seen:
            seen.add(v.resolve())
            uniq.append(v)
    return uniq, dirs


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _read_labels(path: Path) -> dict:
    """A labels.json as a mapping; :class:`ConfigError` (one line) when it is not one."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable JSON labels file ({e})") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object {{video: labels}}, got {type(obj).__name__}")
    return obj


def _labels_plan(dirs: list[Path], videos: list[Path]) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    """The labels files an extraction copies, read (and so checked) before any video is extracted:
    ``([(folder labels.json, labels)], [(loose video, labels beside it)])``."""
    folder = [(d / "labels.json", _read_labels(d / "labels.json")) for d in dirs if (d / "labels.json").is_file()]
    loose = [
        (v, _read_labels(v.parent / "labels.json"))
        for v in videos
        if v.parent not in dirs and (v.parent / "labels.json").is_file()
    ]
    return folder, loose


def _copy_labels(plan: tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]], out: Path) -> None:
    folder, loose = plan
    if len(folder) == 1 and not loose and not (out / "labels.json").exists():
        shutil.copyfile(folder[0][0], out / "labels.json")
        return
    if not folder and not loose:
        return
    merged: dict = {}
    if (out / "labels.json").exists():
        try:
            merged.update(_read_labels(out / "labels.json"))
        except ConfigError as e:
            get_logger("fusewatch.stream.extract").warning(f"{e}: replaced by the labels of this extraction")
    for _, labels in folder:
        merged.update(labels)
    for v, labels in loose:
        if v.stem in labels:
            merged[v.stem] = labels[v.stem]
    _write_json(out / "labels.json", merged)


def _lock(out: Path):
    """An exclusive lock on ``out`` (``out/.extract.lock``) for one extraction: a second extraction
    into the same folder at the same time would overwrite meta.json without the first one's videos."""
    import fcntl

    f = open(out / ".extract.lock", "w")  # noqa: SIM115 - held until the extraction ends
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise ConfigError(f"--out {out}: another fusewatch extract is writing there; wait for it to finish") from None
    return f


def _stale_files(out: Path, stem: str, written: dict, clips: int, extractors, known) -> list[Path]:
    """Feature files of ``stem`` that no longer match it: a representation of this run's extractors
    that this run did not write (absent for this video, e.g. no audio), or one of another run whose
    clip count differs from the new extraction's (another video under the same name). Files of other
    extractors with the same clip count stay: extracting with fewer extractors adds, never removes."""
    mine = {e.name for e in extractors}
    out_files = []
    for name in known:
        f = out / name / f"{stem}.npy"
        if name in written or not f.exists():
            continue
        if name in mine:
            out_files.append(f)
            continue
        try:
            rows = int(np.load(f, mmap_mode="r", allow_pickle=False).shape[0])
        except (OSError, ValueError, IndexError):
            rows = -1
        if rows != clips:
            out_files.append(f)
    return out_files


def extract_video(path: str | os.PathLike, cfg, extractors) -> dict:
    """Features of one video through the worker pipeline: ``{"reps": {name: T×D}, "clips",
    "frames", "fps", "clip_frames", "warning"}``."""
    from .worker import Worker

    collected: list = []
    w = Worker(
        cfg,
        camera=Path(path).stem or "video",
        source=str(path),
        extractors=extractors,
        wall_anchor=0.0,
        realtime=False,
        overflow="block",
        sink=lambda msg, clip: collected.append(msg),
        serve_metrics=False,
    )
    st = w.run()
    reps: dict[str, np.ndarray] = {}
    for e in extractors:
        rows = [m.rep(e.name) for m in collected]
        present = [r for r in rows if r is not None]
        if not collected:
            if not getattr(e, "needs_audio", False):
                reps[e.name] = np.zeros((0, e.dim), dtype=np.float32)
            continue
        if not present:
            continue  # absent for this video (e.g. no audio track)
        if len(present) != len(rows):
            get_logger("fusewatch.stream.extract").warning(
                "representation missing for some clips, not written",
                extra={
                    "fields": {
                        "video": str(path),
                        "representation": e.name,
                        "clips": len(rows),
                        "present": len(present),
                    }
                },
            )
            continue
        reps[e.name] = np.stack(present).astype(np.float32, copy=False)
    return {
        "reps": reps,
        "clips": len(collected),
        "frames": int(st.frames_decoded),
        "fps": st.fps,
        "clip_frames": [[int(m.frame_start), int(m.frame_end)] for m in collected],
        "warning": st.warning,
    }


def extract_videos(
    paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, cfg, *, extractors=None, progress: bool = True
) -> Path:
    """Extract features of videos/directories into ``out_dir`` (see module doc); returns it."""
    log = get_logger("fusewatch.stream.extract")
    videos, dirs = find_videos(paths)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if extractors is None:
        from .worker import default_extractors

        extractors = default_extractors(cfg)
    extractors = list(extractors)
    labels_plan = _labels_plan(dirs, videos)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    lock = _lock(out)
    try:
        return _extract_into(out, videos, labels_plan, cfg, extractors, progress, log)
    finally:
        lock.close()


def _extract_into(out: Path, videos: list[Path], labels_plan, cfg, extractors: list, progress: bool, log) -> Path:
    """:func:`extract_videos` once ``out`` exists and is locked."""
    meta = {
        "clip_len": cfg.clips.clip_len,
        "clip_stride": cfg.clips.clip_stride,
        "sample_fps": cfg.source.sample_fps,
        "max_width": cfg.source.max_width,
        "representations": {e.name: {"dim": int(e.dim), "version": str(e.version)} for e in extractors},
        "videos": {},
    }
    meta_path = out / "meta.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"--out {out}: meta.json is not valid JSON") from None
        if not isinstance(old, dict) or not isinstance(old.get("representations") or {}, dict):
            raise ConfigError(f"--out {out}: meta.json is not a fusewatch feature index; use an empty directory")
        same = (
            all(old.get(k) == meta[k] for k in ("clip_len", "clip_stride"))
            and float(old.get("sample_fps", -1)) == float(meta["sample_fps"])
            # folders written before source.max_width existed hold full-resolution features
            and int(old.get("max_width", 0)) == int(meta["max_width"])
        )
        for name, r in (old.get("representations") or {}).items():
            if name in meta["representations"] and meta["representations"][name] != r:
                same = False
        if not same:
            raise ConfigError(
                f"--out {out}: holds features with other clip settings, working resolution "
                "(source.max_width) or extractor versions; use an empty directory"
            )
        reps = dict(old.get("representations") or {})
        reps.update(meta["representations"])
        meta["representations"] = reps
        meta["videos"] = dict(old.get("videos") or {})

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(videos), unit="video", desc="extract", dynamic_ncols=True)
    try:
        for v in videos:
            if bar is not None:
                bar.set_postfix_str(v.name)
            res = extract_video(v, cfg, extractors)
            stale = _stale_files(out, v.stem, res["reps"], res["clips"], extractors, meta["representations"])
            for f in stale:
                f.unlink()
            if stale and any(f.parent.name not in {e.name for e in extractors} for f in stale):
                log.warning(
                    f"{v.stem}: removed {', '.join(f.parent.name for f in stale)} features of an earlier extraction "
                    f"(their clip count differs from the new {res['clips']} clips)"
                )
            for name, arr in res["reps"].items():
                (out / name).mkdir(exist_ok=True)
                np.save(out / name / f"{v.stem}.npy", arr)
            kept = [n for n in meta["representations"] if n not in res["reps"] and (out / n / f"{v.stem}.npy").exists()]
            meta["videos"][v.stem] = {
                "clips": res["clips"],
                "frames": res["frames"],
                "fps": res["fps"],
                "clip_frames": res["clip_frames"],
                "representations": sorted([*res["reps"], *kept]),
            }
            if res["warning"]:
                meta["videos"][v.stem]["warning"] = res["warning"]
            _write_json(meta_path, meta)
            log.info(
                "extracted",
                extra={"fields": {"video": v.name, "clips": res["clips"], "reps": ",".join(sorted(res["reps"]))}},
            )
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    _copy_labels(labels_plan, out)
    _write_json(meta_path, meta)
    return out
