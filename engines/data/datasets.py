"""Feature datasets for training and evaluation, in the layouts people already have.

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
absent (the model's ``present`` mask) — unless no representation is left.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from fusewatch.errors import DataNotFoundError, DatasetError
from fusewatch.engines.evaluation.metrics import frame_gt_from_spans

log = logging.getLogger("fusewatch.datasets")

UCF_CLASSES = ("abuse", "arrest", "arson", "assault", "burglary", "explosion", "fighting",
               "roadaccidents", "robbery", "shooting", "shoplifting", "stealing", "vandalism")
KNOWN_REP_TOKENS = ("i3d", "c3d", "x3d", "clip", "vggish", "audio", "rgb", "flow", "swin", "videomae",
                    "mobilenetv2", "effnet_lite0", "effnet", "imagebind", "resnet", "vit", "dino")
_SUFFIX_RE = re.compile(r"(?:_(?:" + "|".join(KNOWN_REP_TOKENS) + r"|feat|feats|features|\d+crop))+$",
                        re.IGNORECASE)
_CROP_RE = re.compile(r"__(\d+)$")
MAX_CROPS = 10
"""Largest crop count assumed when guessing the crop axis of 3-D feature arrays (10-crop I3D)."""


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipRule:
    """Clip ``t`` covers frames ``[t*stride, t*stride + clip_len - 1]`` (0-based, inclusive)."""

    clip_len: int
    stride: int | None = None

    def ranges(self, num_clips: int, n_frames: int | None = None) -> list[tuple[int, int]]:
        st = self.stride or self.clip_len
        out = []
        for t in range(num_clips):
            s, e = t * st, t * st + self.clip_len - 1
            if n_frames is not None:
                e = min(e, max(n_frames - 1, s))
            out.append((s, e))
        return out


@dataclass
class VideoFeatures:
    """One video: aligned per-representation clip features and its ground truth.

    ``feats``: representation name → T×D float32 (all with the same T; a representation absent for
    this video is simply missing from the dict). ``video_label``: 1 abnormal, 0 normal, -1 unknown.
    ``frame_gt``: uint8 0/1 per frame, or None. ``clip_to_frames``: list of 0-based inclusive
    ``(start, end)`` frame ranges (one per clip), or a :class:`ClipRule` (an int ``L`` means
    ``ClipRule(L)``: clip ``t`` covers frames ``t*L .. t*L+L-1``).
    """

    name: str
    feats: dict[str, np.ndarray]
    video_label: int = -1
    frame_gt: np.ndarray | None = None
    clip_to_frames: list[tuple[int, int]] | ClipRule | int | None = None
    n_frames: int | None = None
    fps: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.clip_to_frames, (int, np.integer)) and not isinstance(self.clip_to_frames, bool):
            self.clip_to_frames = ClipRule(int(self.clip_to_frames))
        if self.frame_gt is not None:
            self.frame_gt = (np.asarray(self.frame_gt).ravel() > 0).astype(np.uint8)
            if self.n_frames is None:
                self.n_frames = int(self.frame_gt.size)

    @property
    def num_clips(self) -> int:
        for a in self.feats.values():
            return int(a.shape[0])
        return 0

    def clip_ranges(self) -> list[tuple[int, int]]:
        """Resolved 0-based inclusive frame range of every clip."""
        c = self.clip_to_frames
        T = self.num_clips
        if c is None:
            c = ClipRule(1)
        if isinstance(c, ClipRule):
            return c.ranges(T, self.n_frames)
        ranges = [(int(s), int(e)) for s, e in c]
        if len(ranges) != T:
            raise DatasetError(f"video {self.name}: {len(ranges)} clip frame ranges for {T} clips")
        return ranges

    def frames(self) -> int:
        """Frame count (``n_frames``, else the GT length, else the end of the last clip)."""
        if self.n_frames is not None:
            return int(self.n_frames)
        if self.frame_gt is not None:
            return int(self.frame_gt.size)
        r = self.clip_ranges()
        return int(r[-1][1] + 1) if r else 0


@dataclass
class FeatureDataset:
    """Videos with aligned representations. ``dims``: representation → feature dim."""

    videos: list[VideoFeatures]
    dims: dict[str, int]
    layout: str = ""
    root: str = ""
    info: dict = field(default_factory=dict)

    @property
    def representations(self) -> list[str]:
        return list(self.dims)

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[VideoFeatures]:
        return iter(self.videos)

    def __getitem__(self, i: int) -> VideoFeatures:
        return self.videos[i]

    def by_name(self) -> dict[str, VideoFeatures]:
        return {v.name: v for v in self.videos}

    def has_frame_gt(self) -> bool:
        return bool(self.videos) and all(v.frame_gt is not None for v in self.videos)

    def select(self, representations: Sequence[str] | None) -> "FeatureDataset":
        """Keep only ``representations`` (in that order); unknown names raise ValueError."""
        if not representations:
            return self
        reps = [r.strip() for r in representations if r and r.strip()]
        unknown = [r for r in reps if r not in self.dims]
        if unknown:
            raise DatasetError(f"unknown representation {', '.join(unknown)} in {self.root or 'dataset'} "
                             f"(available: {', '.join(self.dims) or 'none'})")
        vids = []
        dropped = 0
        for v in self.videos:
            feats = {r: v.feats[r] for r in reps if r in v.feats}
            if not feats:
                dropped += 1
                continue
            vids.append(dataclasses.replace(v, feats=feats))
        if dropped:
            log.warning("%d video(s) have none of the representations %s: skipped", dropped, ", ".join(reps))
        return FeatureDataset(vids, {r: self.dims[r] for r in reps}, self.layout, self.root, dict(self.info))

    def subset(self, names: Iterable[str]) -> "FeatureDataset":
        keep = set(names)
        return FeatureDataset([v for v in self.videos if v.name in keep], dict(self.dims), self.layout,
                              self.root, dict(self.info))


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def label_from_name(name: str) -> int:
    """Video label from a file name: 0 normal, 1 abnormal, -1 unknown.

    ``normal`` anywhere (UCF-Crime ``Normal_Videos_003``) or XD-Violence ``_label_A`` → 0; a UCF-Crime
    anomaly class prefix (``Arson011``) or ``_label_B``…``_label_G`` → 1.
    """
    n = name.lower()
    if "_label_a" in n or "normal" in n:
        return 0
    if re.search(r"_label_[b-g]", n):
        return 1
    if any(n.startswith(c) for c in UCF_CLASSES):
        return 1
    return -1


def video_name(path: str | Path) -> str:
    """Video name of a feature file: stem without representation suffixes (``_i3d``, ``_clip``, ...)
    and without an XD-Violence crop index (``__3``)."""
    stem = Path(str(path).strip()).name
    for ext in (".npy", ".npz", ".txt", ".mp4", ".avi"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    stem = _CROP_RE.sub("", stem)
    base = _SUFFIX_RE.sub("", stem)
    return base or stem


def _crop_index(path: str | Path) -> int | None:
    m = _CROP_RE.search(Path(str(path)).name.rsplit(".", 1)[0])
    return int(m.group(1)) if m else None


def load_feature_array(path: str | Path, crop_axis: int | None = None) -> np.ndarray:
    """One feature file → T×D float32.

    2-D arrays are returned as they are. 3-D arrays are averaged over the crop axis: ``crop_axis``
    if given, else T×crops×D (RTFM I3D ``T×10×2048``: axis 1) unless the middle axis is longer than
    ``MAX_CROPS`` while the first is not (crops×T×D: axis 0). 1-D arrays are one clip (1×D).
    """
    p = Path(path)
    try:
        if p.suffix == ".txt":
            a = np.loadtxt(p, dtype=np.float32, ndmin=2)
        elif p.suffix == ".npz":
            with np.load(p) as z:
                key = "feats" if "feats" in z else sorted(z.files)[0]
                a = np.asarray(z[key])
        else:
            a = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise DataNotFoundError(f"feature file {p}: not found") from None
    except ValueError as e:
        raise DatasetError(f"feature file {p}: unreadable ({e})") from None
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    elif a.ndim == 3:
        if crop_axis is None:
            crop_axis = 0 if (a.shape[1] > MAX_CROPS and a.shape[0] <= MAX_CROPS) else 1
        a = a.mean(axis=crop_axis)
    elif a.ndim != 2:
        raise DatasetError(f"feature file {p}: expected T×D or T×crops×D, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"feature file {p}: contains NaN or inf")
    return np.ascontiguousarray(a, dtype=np.float32)


def _resample(a: np.ndarray, n: int) -> np.ndarray:
    if a.shape[0] == n:
        return a
    idx = np.clip(np.round(np.linspace(0, a.shape[0] - 1, n)).astype(np.int64), 0, a.shape[0] - 1)
    return a[idx]


def align_clip_counts(name: str, feats: dict[str, np.ndarray], reference: str | None = None,
                      tolerance: float = 0.02) -> tuple[dict[str, np.ndarray], int]:
    """Make all representations of one video have the same clip count (warning when they differ).

    Returns ``(feats, T)``. Counts within ``max(1, tolerance·T)`` of each other are truncated to the
    shortest; otherwise every representation is resampled (nearest clip) to the reference's count.
    """
    counts = {r: a.shape[0] for r, a in feats.items()}
    if len(set(counts.values())) <= 1:
        return feats, next(iter(counts.values()), 0)
    ref = reference if reference in feats else next(iter(feats))
    lo, hi = min(counts.values()), max(counts.values())
    desc = ", ".join(f"{r}={c}" for r, c in counts.items())
    if hi - lo <= max(1, int(math.floor(tolerance * hi))):
        log.warning("video %s: clip counts differ (%s): truncated to %d", name, desc, lo)
        return {r: a[:lo] for r, a in feats.items()}, lo
    n = counts[ref]
    log.warning("video %s: clip counts differ (%s): resampled to %d (count of %s)", name, desc, n, ref)
    return {r: _resample(a, n) for r, a in feats.items()}, n


def _check_dims(per_video: Mapping[str, Mapping[str, np.ndarray]], reps: Sequence[str]) -> dict[str, int]:
    dims: dict[str, int] = {}
    for r in reps:
        seen: dict[int, str] = {}
        for vname, feats in per_video.items():
            if r in feats:
                seen.setdefault(int(feats[r].shape[1]), vname)
        if len(seen) > 1:
            (d1, v1), (d2, v2) = list(seen.items())[:2]
            raise DatasetError(f"representation {r}: mismatched feature dims ({v1}: {d1}, {v2}: {d2})")
        if seen:
            dims[r] = next(iter(seen))
    return dims


def _assemble(per_rep: Mapping[str, Mapping[str, np.ndarray]], reference: str | None = None
              ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """{rep: {video: arr}} → ({video: {rep: arr}} aligned, dims)."""
    reps = list(per_rep)
    names: list[str] = []
    seen = set()
    for r in reps:
        for n in per_rep[r]:
            if n not in seen:
                seen.add(n)
                names.append(n)
    per_video: dict[str, dict[str, np.ndarray]] = {}
    partial = 0
    empty = [n for n in names if any(n in per_rep[r] and per_rep[r][n].shape[0] == 0 for r in reps)]
    if empty:
        log.warning("%d video(s) have no clips (e.g. %s): skipped", len(empty), empty[0])
        names = [n for n in names if n not in set(empty)]
    for n in names:
        feats = {r: per_rep[r][n] for r in reps if n in per_rep[r]}
        if len(feats) < len(reps):
            partial += 1
        per_video[n] = feats
    if partial:
        log.warning("%d of %d video(s) lack some representation(s): marked absent for those videos",
                    partial, len(names))
    dims = _check_dims(per_video, reps)
    out = {}
    for n, feats in per_video.items():
        out[n], _ = align_clip_counts(n, feats, reference or (reps[0] if reps else None))
    return out, dims


# --------------------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------------------

def read_labels_json(path: str | Path) -> dict[str, dict]:
    """Ped2 / fusewatch ``labels.json`` → ``{name: {"frame_gt": uint8 array, "fps", "frames"}}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataNotFoundError(f"labels file {p}: not found") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"labels file {p}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"labels file {p}: expected an object mapping video names to labels")
    out = {}
    for name, rec in data.items():
        if not isinstance(rec, dict):
            raise DatasetError(f"labels file {p}: entry {name!r} is not an object")
        lab = rec.get("labels")
        gt = None
        if isinstance(lab, str):
            if set(lab) - {"0", "1"}:
                raise DatasetError(f"labels file {p}: {name}.labels must be a string of 0/1")
            gt = np.frombuffer(lab.encode("ascii"), dtype=np.uint8) - ord("0")
        elif isinstance(lab, list):
            gt = (np.asarray(lab) > 0).astype(np.uint8)
        frames = rec.get("frames")
        if gt is not None and frames is not None and int(frames) != gt.size:
            log.warning("labels file %s: %s has frames=%s but %d labels; using the labels' length",
                        p, name, frames, gt.size)
        out[Path(name).stem if name.endswith((".mp4", ".avi")) else name] = {
            "frame_gt": gt, "fps": rec.get("fps"),
            "frames": int(gt.size) if gt is not None else (int(frames) if frames is not None else None),
            "label": rec.get("label")}
    return out


def read_ucf_annotations(temporal: str | Path | None = None, frame_counts: str | Path | None = None
                         ) -> dict[str, dict]:
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


def _gt_lookup(gt: str | Path | Mapping | None, names: Sequence[str], clips: Mapping[str, int],
               clip_len: int) -> dict[str, dict]:
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
            raise DatasetError(f"ground-truth file {p}: {a.size} frames, but the {len(names)} videos' clips "
                             f"× clip_len {clip_len} give {total} (order must follow the list)")
        out, off = {}, 0
        for n in names:
            k = clips[n] * clip_len
            out[n] = {"frame_gt": (a[off:off + k] > 0).astype(np.uint8)}
            off += k
        return out
    if p.suffix == ".txt":
        counts = p.parent / "UCF_Annotation.txt"
        if p.name == "UCF_Annotation.txt":
            ann = read_ucf_annotations(None, p)
        else:
            ann = read_ucf_annotations(p, counts if counts.exists() else None)
        return {n: {"spans": a.get("spans"), "frames": a.get("frames"), "class": a.get("class")}
                for n, a in ann.items()}
    raise DatasetError(f"ground-truth file {p}: unsupported (use labels.json, a .npy file or directory, "
                     "or Temporal_Anomaly_Annotation.txt)")


def _apply_gt(v: VideoFeatures, rec: dict | None, explicit_label: int | None = None) -> VideoFeatures:
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
                log.warning("video %s: %d frame labels for %d frames; using the labels' length",
                            v.name, v.frame_gt.size, v.n_frames)
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


# --------------------------------------------------------------------------------------------------
# (a) fusewatch layout
# --------------------------------------------------------------------------------------------------

def load_fusewatch_dir(path: str | Path, representations: Sequence[str] | None = None,
                       labels: str | Path | None = None) -> FeatureDataset:
    """Layout written by ``fusewatch extract`` (``meta.json``, ``<rep>/<video>.npy``, ``labels.json``)."""
    root = Path(path)
    meta_p = root / "meta.json"
    if not meta_p.exists():
        raise DataNotFoundError(f"{root}: no meta.json (not a fusewatch feature directory)")
    try:
        meta = json.loads(meta_p.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_p}: invalid JSON ({e})") from None
    rep_meta = meta.get("representations") or {}
    reps = list(rep_meta) or sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.npy")))
    if representations:
        unknown = [r for r in representations if r not in reps]
        if unknown:
            raise DatasetError(f"unknown representation {', '.join(unknown)} in {root} "
                             f"(available: {', '.join(reps) or 'none'})")
        reps = list(representations)
    if not reps:
        raise DatasetError(f"{root}: no representations (meta.json lists none and no <rep>/*.npy folders)")
    vmeta = meta.get("videos") or {}
    names = list(vmeta) or sorted({f.stem for r in reps for f in (root / r).glob("*.npy")})
    if not names:
        raise DatasetError(f"{root}: no videos")
    clip_len = int(meta.get("clip_len") or 16)
    clip_stride = int(meta.get("clip_stride") or clip_len)
    per_rep: dict[str, dict[str, np.ndarray]] = {r: {} for r in reps}
    for r in reps:
        for n in names:
            f = root / r / f"{n}.npy"
            if f.exists():
                per_rep[r][n] = load_feature_array(f)
    for r in list(reps):
        if not per_rep[r]:     # e.g. audio when no video had an audio track
            if representations:
                raise DatasetError(f"representation {r}: no feature files in {root / r}")
            log.warning("%s: representation %s has no feature files: ignored", root, r)
            del per_rep[r]
            reps.remove(r)
    if not reps:
        raise DatasetError(f"{root}: no videos (no feature files)")
    for r in reps:
        d = (rep_meta.get(r) or {}).get("dim")
        for n, a in per_rep[r].items():
            if d is not None and a.shape[1] != int(d):
                raise DatasetError(f"representation {r}: {n}.npy has dim {a.shape[1]} but meta.json says {d}")
    aligned, dims = _assemble(per_rep)
    lab_p = Path(labels) if labels else root / "labels.json"
    gt = read_labels_json(lab_p) if lab_p.exists() else {}
    if not gt:
        log.info("%s: no labels.json: video labels from names, no frame ground truth", root)
    videos = []
    for n in names:
        feats = aligned.get(n)
        if not feats:
            log.warning("video %s: no feature files in %s: skipped", n, root)
            continue
        vm = vmeta.get(n) or {}
        T = next(iter(feats.values())).shape[0]
        cf = vm.get("clip_frames")
        if cf is not None:
            cf = [(int(s), int(e)) for s, e in cf]
            if len(cf) != T:
                if len(cf) > T:
                    cf = cf[:T]
                else:
                    log.warning("video %s: meta.json has %d clip ranges for %d clips: using clip_len rule",
                                n, len(cf), T)
                    cf = None
        if vm.get("clips") is not None and int(vm["clips"]) != T:
            log.warning("video %s: meta.json says %s clips, features have %d", n, vm["clips"], T)
        v = VideoFeatures(name=n, feats=feats, clip_to_frames=cf if cf is not None else ClipRule(clip_len, clip_stride),
                          n_frames=vm.get("frames"), fps=vm.get("fps"), source=str(root))
        videos.append(_apply_gt(v, gt.get(n)))
    if not videos:
        raise DatasetError(f"{root}: no videos with features")
    return FeatureDataset(videos, dims, "fusewatch", str(root),
                          {"clip_len": clip_len, "clip_stride": clip_stride,
                           "sample_fps": meta.get("sample_fps"),
                           "versions": {r: (rep_meta.get(r) or {}).get("version") for r in dims}})


# --------------------------------------------------------------------------------------------------
# (b) per-video .npy files, list files
# --------------------------------------------------------------------------------------------------

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
    for i, line in enumerate(text.splitlines(), 1):
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


def _read_list_features(entries: Sequence[tuple[Path, int | None]], crop_axis: int | None
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
        arrs = [load_feature_array(f, crop_axis) for f in sorted(files, key=lambda x: _crop_index(x) or 0)]
        if len(arrs) > 1:       # per-crop files (XD-Violence name__0.npy .. name__4.npy): average
            T = min(a.shape[0] for a in arrs)
            if any(a.shape[0] != T for a in arrs):
                log.warning("video %s: crop files differ in clip count: truncated to %d", n, T)
            if len({a.shape[1] for a in arrs}) > 1:
                raise DatasetError(f"video {n}: crop files have different feature dims")
            feats[n] = np.mean([a[:T] for a in arrs], axis=0).astype(np.float32)
        else:
            feats[n] = arrs[0]
    return feats, labels


def rep_name_from_file(path: str | Path) -> str:
    """Representation name guessed from a list file / folder name (``ucf-i3d-test.list`` → ``i3d``)."""
    stem = Path(path).stem.lower()
    tokens = [t for t in re.split(r"[-_.]+", stem) if t]
    for t in tokens:
        if t in KNOWN_REP_TOKENS:
            return t
    rest = [t for t in tokens if t not in ("train", "test", "val", "list") and not re.fullmatch(r"\d+crop", t)]
    return "_".join(rest) or stem


def load_lists(lists: Mapping[str, str | Path], gt: str | Path | Mapping | None = None,
               clip_len: int = 16, root: str | Path | None = None, crop_axis: int | None = None,
               labels: Mapping[str, int] | None = None) -> FeatureDataset:
    """Per-video feature files named in one list file per representation (``{rep: list_path}``).

    ``gt``: frame ground truth (see module docstring); ``clip_len``: frames per clip (clip ``t`` =
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
    return _finish_npy(per_rep, order, gt, clip_len, {**list_labels, **(labels or {})}, "list",
                       ", ".join(str(p) for p in lists.values()))


def load_npy_dir(path: str | Path, representations: Sequence[str] | None = None,
                 gt: str | Path | Mapping | None = None, clip_len: int = 16,
                 crop_axis: int | None = None) -> FeatureDataset:
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
            raise DatasetError(f"unknown representation {', '.join(unknown)} in {root} "
                             f"(available: {', '.join(reps)})")
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
    aligned, dims = _assemble(per_rep)
    names = [n for n in order if aligned.get(n)]
    if not names:
        raise DatasetError(f"{root}: no videos")
    clips = {n: next(iter(aligned[n].values())).shape[0] for n in names}
    gts = _gt_lookup(gt, names, clips, clip_len)
    if gt is not None and not any(n in gts for n in names):
        log.warning("ground truth %s matches none of the %d videos (names like %s)", gt, len(names), names[0])
    videos = []
    for n in names:
        v = VideoFeatures(name=n, feats=aligned[n], clip_to_frames=ClipRule(clip_len), source=root)
        videos.append(_apply_gt(v, gts.get(n), explicit.get(n)))
    return FeatureDataset(videos, dims, layout, root, {"clip_len": clip_len})


# --------------------------------------------------------------------------------------------------
# (c) UCF-Crime C3D text features
# --------------------------------------------------------------------------------------------------

def _is_feature_txt(p: Path) -> bool:
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


def load_ucf_c3d(path: str | Path, annotation: str | Path | None = None,
                 frame_counts: str | Path | None = None, rep: str = "c3d") -> FeatureDataset:
    """UCF-Crime C3D text features (``<video>.txt``, one segment per line) with the official
    annotations (defaults: ``Temporal_Anomaly_Annotation.txt`` / ``UCF_Annotation.txt`` in the folder).
    """
    root = Path(path)
    if not root.is_dir():
        raise DataNotFoundError(f"{root}: not a directory")
    files = sorted(f for f in root.glob("*.txt") if _is_feature_txt(f))
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
    aligned, dims = _assemble(per_rep)
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
        videos.append(_apply_gt(v, rec))
    return FeatureDataset(videos, dims, "ucf_c3d_txt", str(root), {})


# --------------------------------------------------------------------------------------------------
# auto-detection
# --------------------------------------------------------------------------------------------------

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


def load_dataset(path: str | Path, representations: Sequence[str] | None = None, split: str | None = None,
                 gt: str | Path | Mapping | None = None, clip_len: int = 16) -> FeatureDataset:
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
    elif any(_is_feature_txt(f) for f in p.glob("*.txt")):
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
        ds = FeatureDataset(vids, _check_dims(per_video, reps), "memory", "")
    return ds.select(representations) if representations else ds
