"""Layout (b): per-video ``.npy`` files (RTFM style), named in list files or in folders.

List files: one path per line, optionally followed by a 0/1 video label (``path label`` or
``path,label``). Arrays are T×D, or T×crops×D / crops×T×D (averaged over crops, e.g. I3D 10-crop
T×10×2048); files ``<name>__<k>.npy`` (XD-Violence per-crop files) are averaged too. Any dimension
works (CLIP T×512, VGGish T×128, ...). A directory of ``<rep>/`` sub-folders of ``.npy`` files (or
of ``.npy`` files directly) is read without a list.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from fusewatch.engines.data.align import assemble
from fusewatch.engines.data.arrays import load_feature_array
from fusewatch.engines.data.ground_truth import apply_gt, gt_lookup
from fusewatch.engines.data.names import crop_index, rep_name_from_file, video_name
from fusewatch.engines.data.records import ClipRule, FeatureDataset, VideoFeatures
from fusewatch.errors import DataNotFoundError, DatasetError

log = logging.getLogger("fusewatch.datasets")


def read_list_file(path: str | Path, root: str | Path | None = None) -> list[tuple[Path, int | None]]:
    """RTFM-style list: one feature path per line, optionally ``path label`` / ``path,label``.

    Relative paths resolve against ``root`` (default: the list file's folder; if missing there, the
    current directory).
    """
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise DataNotFoundError(f"list file {p}: not found") from None
    base = Path(root) if root else p.parent
    out = []
    for _i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [s for s in re.split(r"[,\t ]+", line) if s]
        label = None
        if len(parts) >= 2 and parts[-1] in ("0", "1"):
            label = int(parts[-1])
            fpath = line[: line.rfind(parts[-1])].rstrip(" ,\t")
        else:
            fpath = line
        f = Path(fpath)
        if not f.is_absolute():
            cand = base / f
            f = cand if cand.exists() or not f.exists() else f
        out.append((f, label))
    if not out:
        raise DatasetError(f"list file {p}: no entries")
    return out


def _read_list_features(
    entries: Sequence[tuple[Path, int | None]], crop_axis: int | None
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    groups: dict[str, list[Path]] = {}
    labels: dict[str, int] = {}
    for f, lab in entries:
        n = video_name(f)
        groups.setdefault(n, []).append(f)
        if lab is not None:
            labels[n] = lab
    feats = {}
    for n, files in groups.items():
        arrs = [load_feature_array(f, crop_axis) for f in sorted(files, key=lambda x: crop_index(x) or 0)]
        if len(arrs) > 1:  # per-crop files (XD-Violence name__0.npy .. name__4.npy): average
            T = min(a.shape[0] for a in arrs)
            if any(a.shape[0] != T for a in arrs):
                log.warning("video %s: crop files differ in clip count: truncated to %d", n, T)
            if len({a.shape[1] for a in arrs}) > 1:
                raise DatasetError(f"video {n}: crop files have different feature dims")
            feats[n] = np.mean([a[:T] for a in arrs], axis=0).astype(np.float32)
        else:
            feats[n] = arrs[0]
    return feats, labels


def load_lists(
    lists: Mapping[str, str | Path],
    gt: str | Path | Mapping | None = None,
    clip_len: int = 16,
    root: str | Path | None = None,
    crop_axis: int | None = None,
    labels: Mapping[str, int] | None = None,
) -> FeatureDataset:
    """Per-video feature files named in one list file per representation (``{rep: list_path}``).

    ``gt``: frame ground truth (:func:`fusewatch.engines.data.ground_truth.gt_lookup`); ``clip_len``: frames per clip (clip ``t`` =
    frames ``t*clip_len .. t*clip_len+clip_len-1``); ``labels``: explicit video labels by name.
    """
    if not lists:
        raise DatasetError("no list files given")
    per_rep, list_labels, order = {}, {}, []
    for rep, lp in lists.items():
        entries = read_list_file(lp, root)
        feats, labs = _read_list_features(entries, crop_axis)
        per_rep[rep] = feats
        list_labels.update(labs)
        for n in feats:
            if n not in order:
                order.append(n)
    return _finish_npy(
        per_rep,
        order,
        gt,
        clip_len,
        {**list_labels, **(labels or {})},
        "list",
        ", ".join(str(p) for p in lists.values()),
    )


def load_npy_dir(
    path: str | Path,
    representations: Sequence[str] | None = None,
    gt: str | Path | Mapping | None = None,
    clip_len: int = 16,
    crop_axis: int | None = None,
) -> FeatureDataset:
    """A folder of ``<rep>/<video>.npy`` sub-folders, or of ``<video>.npy`` files (one representation
    named after the folder). Ground truth: ``gt``, else ``labels.json`` in the folder if present."""
    root = Path(path)
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.npy")))
    if subdirs:
        reps = {d.name: d for d in subdirs}
    elif any(root.glob("*.npy")):
        reps = {rep_name_from_file(root.name): root}
    else:
        raise DatasetError(f"{root}: no .npy feature files")
    if representations:
        unknown = [r for r in representations if r not in reps]
        if unknown:
            raise DatasetError(f"unknown representation {', '.join(unknown)} in {root} (available: {', '.join(reps)})")
        reps = {r: reps[r] for r in representations}
    per_rep, order = {}, []
    for rep, d in reps.items():
        entries = [(f, None) for f in sorted(d.glob("*.npy")) if not f.name.startswith("gt")]
        per_rep[rep], _ = _read_list_features(entries, crop_axis)
        for n in per_rep[rep]:
            if n not in order:
                order.append(n)
    if gt is None and (root / "labels.json").exists():
        gt = root / "labels.json"
    return _finish_npy(per_rep, order, gt, clip_len, {}, "npy", str(root))


def _finish_npy(per_rep, order, gt, clip_len, explicit, layout, root) -> FeatureDataset:
    aligned, dims = assemble(per_rep)
    names = [n for n in order if aligned.get(n)]
    if not names:
        raise DatasetError(f"{root}: no videos")
    clips = {n: next(iter(aligned[n].values())).shape[0] for n in names}
    gts = gt_lookup(gt, names, clips, clip_len)
    if gt is not None and not any(n in gts for n in names):
        log.warning("ground truth %s matches none of the %d videos (names like %s)", gt, len(names), names[0])
    videos = []
    for n in names:
        v = VideoFeatures(name=n, feats=aligned[n], clip_to_frames=ClipRule(clip_len), source=root)
        videos.append(apply_gt(v, gts.get(n), explicit.get(n)))
    return FeatureDataset(videos, dims, layout, root, {"clip_len": clip_len})
