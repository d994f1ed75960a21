"""Name heuristics: video names, video labels and representation names from file names."""

from __future__ import annotations

import re
from pathlib import Path

UCF_CLASSES = (
    "abuse",
    "arrest",
    "arson",
    "assault",
    "burglary",
    "explosion",
    "fighting",
    "roadaccidents",
    "robbery",
    "shooting",
    "shoplifting",
    "stealing",
    "vandalism",
)
KNOWN_REP_TOKENS = (
    "i3d",
    "c3d",
    "x3d",
    "clip",
    "vggish",
    "audio",
    "rgb",
    "flow",
    "swin",
    "videomae",
    "mobilenetv2",
    "effnet_lite0",
    "effnet",
    "imagebind",
    "resnet",
    "vit",
    "dino",
)
_SUFFIX_RE = re.compile(r"(?:_(?:" + "|".join(KNOWN_REP_TOKENS) + r"|feat|feats|features|\d+crop))+$", re.IGNORECASE)
_CROP_RE = re.compile(r"__(\d+)$")


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


def crop_index(path: str | Path) -> int | None:
    """XD-Violence per-crop index of a feature file (``name__3.npy`` → 3), or None."""
    m = _CROP_RE.search(Path(str(path)).name.rsplit(".", 1)[0])
    return int(m.group(1)) if m else None


def rep_name_from_file(path: str | Path) -> str:
    """Representation name guessed from a list file / folder name (``ucf-i3d-test.list`` → ``i3d``)."""
    stem = Path(path).stem.lower()
    tokens = [t for t in re.split(r"[-_.]+", stem) if t]
    for t in tokens:
        if t in KNOWN_REP_TOKENS:
            return t
    rest = [t for t in tokens if t not in ("train", "test", "val", "list") and not re.fullmatch(r"\d+crop", t)]
    return "_".join(rest) or stem
