"""Ground truth: ``labels.json``, UCF-Crime annotations and segment ranges, per-video lookup, and
the video-label rule.

Video labels: an explicit label (list column, annotation class) wins; else ``any(frame_gt)``; else the
name (:func:`fusewatch.engines.data.names.label_from_name`); else unknown (``-1``; training refuses
unknown labels).

Frame ground truth: ``labels.json`` (Ped2 / fusewatch format), a directory of per-video 0/1 ``.npy``
arrays, a single concatenated RTFM ``gt-*.npy`` (split by ``clips × clip_len`` in list order), or the
UCF-Crime annotation text.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from fusewatch.engines.data.names import label_from_name, video_name
from fusewatch.engines.data.records import VideoFeatures
from fusewatch.engines.evaluation.metrics import frame_gt_from_spans
from fusewatch.errors import DataNotFoundError, DatasetError

log = logging.getLogger("fusewatch.datasets")


def _labels_field(p: Path, name: str, field: str, value: object, want: str) -> DatasetError:
    """The error for a ``labels.json`` field of the wrong type (names file, video and field)."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return DatasetError(f"labels file {p}: video {name!r}: field {field!r} must be {want}, got {shown}")


def _is_number(x: object) -> bool:
    """A finite JSON number (``true``/``false`` are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _frame_gt(p: Path, name: str, lab: object) -> np.ndarray | None:
    """A ``labels`` field (string of 0/1 or list of numbers, one per frame) → uint8 0/1 array."""
    if lab is None:
        return None
    want = "a string of 0/1 or a list of numbers (one per frame)"
    if isinstance(lab, str):
        if set(lab) - {"0", "1"}:
            raise _labels_field(p, name, "labels", lab, want)
        return np.frombuffer(lab.encode("ascii"), dtype=np.uint8) - ord("0")
    if isinstance(lab, list):
        bad = next((i for i, x in enumerate(lab) if not isinstance(x, (int, float))), None)
        if bad is not None:
            raise _labels_field(p, name, f"labels[{bad}]", lab[bad], "a number (0/1, one per frame)")
        return (np.asarray(lab, dtype=np.float64) > 0).astype(np.uint8)
    raise _labels_field(p, name, "labels", lab, want)


def read_labels_json(path: str | Path) -> dict[str, dict]:
    """Ped2 / fusewatch ``labels.json`` → ``{name: {"frame_gt": uint8 array, "fps", "frames", "label"}}``.

    Per video: ``labels`` (string of 0/1 or list of numbers, one per frame), ``frames`` (count,
    integer ≥ 0), ``fps`` (number > 0), ``label`` (0 normal, 1 abnormal, -1 unknown), all optional.
    A field of the wrong type raises :class:`DatasetError` naming the file, the video and the field.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataNotFoundError(f"labels file {p}: not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"labels file {p}: invalid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"labels file {p}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"labels file {p}: expected an object mapping video names to labels")
    out = {}
    for name, rec in data.items():
        if not isinstance(rec, dict):
            raise DatasetError(f"labels file {p}: entry {name!r} is not an object")
        gt = _frame_gt(p, name, rec.get("labels"))
        frames, fps, label = rec.get("frames"), rec.get("fps"), rec.get("label")
        if frames is not None and not (_is_number(frames) and frames >= 0 and frames == int(frames)):
            raise _labels_field(p, name, "frames", frames, "an integer ≥ 0")
        if fps is not None and not (_is_number(fps) and fps > 0):
            raise _labels_field(p, name, "fps", fps, "a number > 0")
        if label is not None and label not in (-1, 0, 1):
            raise _labels_field(p, name, "label", label, "0 (normal), 1 (abnormal) or -1 (unknown)")
        if gt is not None and frames is not None and int(frames) != gt.size:
            log.warning(
                "labels file %s: %s has frames=%s but %d labels; using the labels' length", p, name, frames, gt.size
            )
        out[Path(name).stem if name.endswith((".mp4", ".avi")) else name] = {
            "frame_gt": gt,
            "fps": fps,
            "frames": int(gt.size) if gt is not None else (int(frames) if frames is not None else None),
            "label": label,
        }
    return out


def read_ucf_annotations(temporal: str | Path | None = None, frame_counts: str | Path | None = None) -> dict[str, dict]:
    """UCF-Crime annotation text files → ``{name: {"class", "spans", "frames"}}``.

    ``temporal``: ``Temporal_Anomaly_Annotation.txt`` lines ``name class s1 e1 s2 e2``;
    ``frame_counts``: ``UCF_Annotation.txt`` lines ``path n_frames class s1 e1 s2 e2``.
    Names are file stems (``Explosion008_x264``).
    """
    out: dict[str, dict] = {}

    def _rows(p: Path) -> Iterator[tuple[int, list[str]]]:
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise DataNotFoundError(f"annotation file {p}: not found") from None
        for i, line in enumerate(text.splitlines(), 1):
            tok = line.split()
            if tok:
                yield i, tok

    if frame_counts is not None:
        p = Path(frame_counts)
        for i, tok in _rows(p):
            if len(tok) < 7:
                raise DatasetError(f"annotation file {p}:{i}: expected 'path frames class s1 e1 s2 e2'")
            try:
                n, spans = int(tok[1]), [(int(tok[3]), int(tok[4])), (int(tok[5]), int(tok[6]))]
            except ValueError:
                raise DatasetError(f"annotation file {p}:{i}: non-integer frame numbers") from None
            out[Path(tok[0]).stem] = {"class": tok[2], "spans": spans, "frames": n}
    if temporal is not None:
        p = Path(temporal)
        for i, tok in _rows(p):
            if len(tok) < 6:
                raise DatasetError(f"annotation file {p}:{i}: expected 'name class s1 e1 s2 e2'")
            try:
                spans = [(int(tok[2]), int(tok[3])), (int(tok[4]), int(tok[5]))]
            except ValueError:
                raise DatasetError(f"annotation file {p}:{i}: non-integer frame numbers") from None
            rec = out.setdefault(Path(tok[0]).stem, {"frames": None})
            rec["class"], rec["spans"] = tok[1], spans
    return out


def ucf_segment_ranges(n_frames: int, n_segments: int = 32) -> list[tuple[int, int]]:
    """0-based inclusive frame ranges of the UCF-Crime protocol's segments.

    Boundaries ``b = round(linspace(1, n_frames, n_segments + 1))`` (1-based, MATLAB rounding: half
    away from zero); segment ``i`` covers ``b[i] .. b[i+1]-1`` (just ``b[i]`` when that is empty) and
    the last segment also covers ``b[-1]`` (the last frame).
    """
    b = np.floor(np.linspace(1, n_frames, n_segments + 1) + 0.5).astype(np.int64)
    out = []
    for i in range(n_segments):
        s, e = int(b[i]), int(b[i + 1]) - 1
        if i == n_segments - 1:
            e = int(b[i + 1])
        e = max(e, s)
        out.append((s - 1, e - 1))
    return out


def gt_lookup(
    gt: str | Path | Mapping | None, names: Sequence[str], clips: Mapping[str, int], clip_len: int
) -> dict[str, dict]:
    """Frame GT per video from a labels.json, a per-video .npy directory, a concatenated .npy, UCF
    annotation text, or a mapping name → array."""
    if gt is None:
        return {}
    if isinstance(gt, Mapping):
        return {n: {"frame_gt": (np.asarray(a).ravel() > 0).astype(np.uint8)} for n, a in gt.items()}
    p = Path(gt)
    if p.is_dir():
        out = {}
        for f in sorted(p.glob("*.npy")):
            out[video_name(f)] = {"frame_gt": (np.load(f).ravel() > 0).astype(np.uint8)}
        if not out:
            raise DatasetError(f"ground-truth directory {p}: no .npy files")
        return out
    if not p.exists():
        raise DataNotFoundError(f"ground-truth file {p}: not found")
    if p.suffix == ".json":
        return read_labels_json(p)
    if p.suffix == ".npy":
        a = np.load(p, allow_pickle=False).ravel()
        total = sum(clips[n] for n in names) * clip_len
        if a.size != total:
            raise DatasetError(
                f"ground-truth file {p}: {a.size} frames, but the {len(names)} videos' clips "
                f"× clip_len {clip_len} give {total} (order must follow the list)"
            )
        out, off = {}, 0
        for n in names:
            k = clips[n] * clip_len
            out[n] = {"frame_gt": (a[off : off + k] > 0).astype(np.uint8)}
            off += k
        return out
    if p.suffix == ".txt":
        counts = p.parent / "UCF_Annotation.txt"
        if p.name == "UCF_Annotation.txt":
            ann = read_ucf_annotations(None, p)
        else:
            ann = read_ucf_annotations(p, counts if counts.exists() else None)
        return {
            n: {"spans": a.get("spans"), "frames": a.get("frames"), "class": a.get("class")} for n, a in ann.items()
        }
    raise DatasetError(
        f"ground-truth file {p}: unsupported (use labels.json, a .npy file or directory, "
        "or Temporal_Anomaly_Annotation.txt)"
    )


def apply_gt(v: VideoFeatures, rec: dict | None, explicit_label: int | None = None) -> VideoFeatures:
    """Fill ``v``'s frame count, fps, frame GT and video label from a :func:`gt_lookup` record (in place)."""
    if rec:
        if rec.get("frames") and v.n_frames is None:
            v.n_frames = int(rec["frames"])
        if rec.get("fps") and v.fps is None:
            v.fps = float(rec["fps"])
        if rec.get("frame_gt") is not None:
            v.frame_gt = np.asarray(rec["frame_gt"], dtype=np.uint8)
            if v.n_frames is None:
                v.n_frames = int(v.frame_gt.size)
            elif v.n_frames != v.frame_gt.size:
                log.warning(
                    "video %s: %d frame labels for %d frames; using the labels' length",
                    v.name,
                    v.frame_gt.size,
                    v.n_frames,
                )
                v.n_frames = int(v.frame_gt.size)
        elif rec.get("spans") is not None:
            n = v.n_frames
            if n is None:
                n = v.frames()
                log.warning("video %s: frame count unknown, using %d from the clips", v.name, n)
                v.n_frames = n
            v.frame_gt = frame_gt_from_spans(n, rec["spans"], one_based=True)
        if explicit_label is None and rec.get("label") in (0, 1):
            explicit_label = int(rec["label"])
        if explicit_label is None and rec.get("class"):
            explicit_label = 0 if str(rec["class"]).lower().startswith("normal") else 1
    if explicit_label is not None and explicit_label >= 0:
        v.video_label = int(explicit_label)
    elif v.frame_gt is not None:
        v.video_label = int(v.frame_gt.any())
    else:
        v.video_label = label_from_name(v.name)
    return v
