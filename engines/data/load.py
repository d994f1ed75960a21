"""Load a feature dataset in the layouts people already have, detecting the layout.

Every loader returns a :class:`FeatureDataset`: a list of :class:`VideoFeatures` (one per video, all
representations aligned to the same clip count) plus the representation dims.

Layouts (:func:`load_dataset` detects them):

(a) **fusewatch** (``fusewatch extract``): ``DIR/meta.json``, ``DIR/<rep>/<video>.npy`` (T×D float32),
    ``DIR/labels.json`` (per video ``frames``, ``fps``, ``labels`` = string of 0/1 per frame).
    Clip frame ranges come from ``meta.json`` ``videos[stem].clip_frames`` (inclusive).
(b) **per-video .npy + list files** (RTFM style): one path per line, optionally followed by a 0/1
    video label (``path label`` or ``path,label``). Arrays are T×D, or T×crops×D / crops×T×D
    (averaged over crops, e.g. I3D 10-crop T×10×2048); files ``<name>__<k>.npy`` (XD-Violence
    per-crop files) are averaged too. Any dimension works (CLIP T×512, VGGish T×128, ...). A directory
    holding ``*.list`` files is read per split (files whose name contains ``test`` are the test
    split); a directory of ``<rep>/`` sub-folders of ``.npy`` files (or of ``.npy`` files directly)
    is read without a list.
(c) **UCF-Crime C3D text** (Sultani et al.): ``<video>.txt`` with one segment per line (32×4096),
    ``Temporal_Anomaly_Annotation.txt`` (name, class, start1, end1, start2, end2; -1 = none;
    1-based frame numbers) and ``UCF_Annotation.txt`` (frame count in column 2). Segment ``i`` covers
    frames ``[b[i], b[i+1]-1]`` (1-based; the last one includes ``b[32]``) with
    ``b = round(linspace(1, n_frames, 33))``.

Video labels: an explicit label (list column, annotation class) wins; else ``any(frame_gt)``; else the
name (``normal``/``_label_A`` → 0, a UCF-Crime anomaly class prefix or ``_label_B..G`` → 1);
else unknown (``-1``; training refuses unknown labels).

Frame ground truth: ``labels.json`` (Ped2 / fusewatch format), a directory of per-video 0/1 ``.npy``
arrays, a single concatenated RTFM ``gt-*.npy`` (split by ``clips × clip_len`` in list order), or the
UCF-Crime annotation text.

Several representations of the same videos are aligned by video name. When their clip counts differ
the counts are made equal, with a logged warning: counts within ``max(1, 2 %)`` are truncated to the
shortest; larger differences are resampled (nearest clip) to the count of the reference (first)
representation. A video lacking a representation keeps the others; that representation is marked
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from fusewatch.engines.data.align import check_dims
from fusewatch.engines.data.formats.fusewatch_dir import load_fusewatch_dir
from fusewatch.engines.data.formats.npy_lists import load_lists, load_npy_dir
from fusewatch.engines.data.formats.ucf_c3d import is_feature_txt, load_ucf_c3d
from fusewatch.engines.data.names import rep_name_from_file
from fusewatch.engines.data.records import FeatureDataset
from fusewatch.errors import DataNotFoundError, DatasetError


def _split_lists(root: Path, split: str | None) -> dict[str, Path]:
    lists = sorted(root.glob("*.list"))
    if split in (None, "", "all"):
        split = "train"
    want_test = split == "test"
    chosen = [p for p in lists if ("test" in p.stem.lower()) == want_test]
    if not chosen:
        raise DatasetError(f"{root}: no {split} list files (found: {', '.join(p.name for p in lists)})")
    out: dict[str, Path] = {}
    for p in chosen:
        r = rep_name_from_file(p)
        if r in out:
            raise DatasetError(f"{root}: two {split} lists for representation {r}: {out[r].name}, {p.name}")
        out[r] = p
    return out


def load_dataset(
    path: str | Path,
    representations: Sequence[str] | None = None,
    split: str | None = None,
    gt: str | Path | Mapping | None = None,
    clip_len: int = 16,
) -> FeatureDataset:
    """Load a feature dataset from ``path``, detecting its layout (module docstring).

    ``path``: a fusewatch feature folder (``meta.json``); a folder of UCF-Crime C3D ``.txt`` files; a
    folder with ``*.list`` files (``split`` picks ``train``/``test`` lists; ``gt``: frame ground truth,
    default ``labels.json`` or a single ``gt*.npy`` in the folder); a list file; or a folder of
    ``<rep>/*.npy`` or ``*.npy`` files. ``representations``: keep only these, in this order.
    Raises FileNotFoundError / ValueError with a one-line message on user mistakes.
    """
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"data {p}: not found")
    reps = [r.strip() for r in representations if r.strip()] if representations else None
    if p.is_file():
        if p.suffix in (".list", ".txt", ".csv"):
            rep = reps[0] if reps and len(reps) == 1 else rep_name_from_file(p)
            ds = load_lists({rep: p}, gt=gt, clip_len=clip_len)
        else:
            raise DatasetError(f"data {p}: expected a directory or a .list file")
    elif (p / "meta.json").exists():
        ds = load_fusewatch_dir(p, reps, labels=gt if isinstance(gt, (str, Path)) else None)
    elif any(is_feature_txt(f) for f in p.glob("*.txt")):
        ds = load_ucf_c3d(p)
    elif any(p.glob("*.list")):
        lists = _split_lists(p, split)
        if gt is None:
            if (p / "labels.json").exists():
                gt = p / "labels.json"
            else:
                cands = sorted(p.glob("gt*.npy"))
                if split == "test" and len(cands) == 1:
                    gt = cands[0]
                elif (p / "Temporal_Anomaly_Annotation.txt").exists():
                    gt = p / "Temporal_Anomaly_Annotation.txt"
        ds = load_lists(lists, gt=gt, clip_len=clip_len)
    elif any(p.glob("*.npy")) or any(d.is_dir() and any(d.glob("*.npy")) for d in p.iterdir()):
        ds = load_npy_dir(p, reps, gt=gt, clip_len=clip_len)
    else:
        raise DatasetError(f"data {p}: no videos (no meta.json, feature .txt, .list or .npy files)")
    if not ds.videos:
        raise DatasetError(f"data {p}: no videos")
    return ds.select(reps) if reps else ds


def as_dataset(data, representations: Sequence[str] | None = None) -> FeatureDataset:
    """A :class:`FeatureDataset` from a path, a dataset, or a list of :class:`VideoFeatures`."""
    if isinstance(data, FeatureDataset):
        ds = data
    elif isinstance(data, (str, Path)):
        return load_dataset(data, representations)
    else:
        vids = list(data)
        if not vids:
            raise DatasetError("no videos")
        reps: list[str] = []
        for v in vids:
            for r in v.feats:
                if r not in reps:
                    reps.append(r)
        per_video = {v.name: v.feats for v in vids}
        ds = FeatureDataset(vids, check_dims(per_video, reps), "memory", "")
    return ds.select(representations) if representations else ds
