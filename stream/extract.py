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
versions match, and fails with a clear error otherwise.
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
)


def find_videos(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Expand files and directories (non-recursive, sorted) into video paths; returns
    ``(videos, directories)``."""
    videos: list[Path] = []
    dirs: list[Path] = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            dirs.append(p)
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_EXTS)
            if not found:
                raise SourceError(f"extract {p}: directory contains no video files ({', '.join(VIDEO_EXTS[:5])}, ...)")
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


def _copy_labels(dirs: list[Path], videos: list[Path], out: Path) -> None:
    label_files = [d / "labels.json" for d in dirs if (d / "labels.json").is_file()]
    # loose files: take their entries from a labels.json beside them
    loose = [v for v in videos if v.parent not in dirs and (v.parent / "labels.json").is_file()]
    if len(label_files) == 1 and not loose and not (out / "labels.json").exists():
        shutil.copyfile(label_files[0], out / "labels.json")
        return
    if not label_files and not loose:
        return
    merged: dict = {}
    if (out / "labels.json").exists():
        try:
            merged.update(json.loads((out / "labels.json").read_text()))
        except ValueError:
            pass
    for lf in label_files:
        merged.update(json.loads(lf.read_text()))
    for v in loose:
        labels = json.loads((v.parent / "labels.json").read_text())
        if v.stem in labels:
            merged[v.stem] = labels[v.stem]
    _write_json(out / "labels.json", merged)


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
    out.mkdir(parents=True, exist_ok=True)
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
        except ValueError:
            raise ConfigError(f"--out {out}: meta.json is not valid JSON") from None
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
            for name in meta["representations"]:
                stale = out / name / f"{v.stem}.npy"
                if name not in res["reps"] and stale.exists():
                    stale.unlink()
            for name, arr in res["reps"].items():
                (out / name).mkdir(exist_ok=True)
                np.save(out / name / f"{v.stem}.npy", arr)
            meta["videos"][v.stem] = {
                "clips": res["clips"],
                "frames": res["frames"],
                "fps": res["fps"],
                "clip_frames": res["clip_frames"],
                "representations": sorted(res["reps"]),
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
    _copy_labels(dirs, videos, out)
    _write_json(meta_path, meta)
    return out
