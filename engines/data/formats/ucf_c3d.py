"""Layout (c): UCF-Crime C3D text features (Sultani et al.): ``<video>.txt`` with one segment per
line (32×4096), ``Temporal_Anomaly_Annotation.txt`` (name, class, start1, end1, start2, end2; -1 =
none; 1-based frame numbers) and ``UCF_Annotation.txt`` (frame count in column 2); segment frame
ranges: :func:`fusewatch.engines.data.ground_truth.ucf_segment_ranges`."""

from __future__ import annotations

import logging
from pathlib import Path

from fusewatch.engines.data.align import assemble
from fusewatch.engines.data.arrays import load_feature_array
from fusewatch.engines.data.ground_truth import apply_gt, read_ucf_annotations, ucf_segment_ranges
from fusewatch.engines.data.records import ClipRule, FeatureDataset, VideoFeatures
from fusewatch.errors import DataNotFoundError, DatasetError

log = logging.getLogger("fusewatch.datasets")


def is_feature_txt(p: Path) -> bool:
    if p.name in ("Temporal_Anomaly_Annotation.txt", "UCF_Annotation.txt"):
        return False
    try:
        with p.open() as fh:
            first = fh.readline().split()
    except (OSError, UnicodeDecodeError):
        return False
    if len(first) < 8:
        return False
    try:
        [float(x) for x in first[:8]]
    except ValueError:
        return False
    return True


def load_ucf_c3d(
    path: str | Path, annotation: str | Path | None = None, frame_counts: str | Path | None = None, rep: str = "c3d"
) -> FeatureDataset:
    """UCF-Crime C3D text features (``<video>.txt``, one segment per line) with the official
    annotations (defaults: ``Temporal_Anomaly_Annotation.txt`` / ``UCF_Annotation.txt`` in the folder).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: not a directory")
    files = sorted(f for f in root.glob("*.txt") if is_feature_txt(f))
    if not files:
        raise DatasetError(f"{root}: no feature text files")
    ann_p = Path(annotation) if annotation else root / "Temporal_Anomaly_Annotation.txt"
    cnt_p = Path(frame_counts) if frame_counts else root / "UCF_Annotation.txt"
    ann = read_ucf_annotations(ann_p if ann_p.exists() else None, cnt_p if cnt_p.exists() else None)
    if not ann:
        log.warning("%s: no UCF-Crime annotation files: labels from names, no frame ground truth", root)
    per_rep = {rep: {}}
    for f in files:
        per_rep[rep][f.stem] = load_feature_array(f)
    aligned, dims = assemble(per_rep)
    videos = []
    for f in files:
        n = f.stem
        rec = ann.get(n)
        T = aligned[n][rep].shape[0]
        nf = rec.get("frames") if rec else None
        cf: list[tuple[int, int]] | ClipRule
        if nf:
            cf = ucf_segment_ranges(int(nf), T)
        else:
            cf = ClipRule(16)
            if rec:
                log.warning("video %s: frame count unknown (no UCF_Annotation.txt entry): 16 frames/segment", n)
        v = VideoFeatures(name=n, feats=aligned[n], clip_to_frames=cf, n_frames=nf, source=str(root))
        videos.append(apply_gt(v, rec))
    return FeatureDataset(videos, dims, "ucf_c3d_txt", str(root), {})
