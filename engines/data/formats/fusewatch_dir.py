"""Layout (a), written by ``fusewatch extract``: ``DIR/meta.json``, ``DIR/<rep>/<video>.npy``
(T×D float32), ``DIR/labels.json`` (per video ``frames``, ``fps``, ``labels`` = string of 0/1 per
frame). Clip frame ranges come from ``meta.json`` ``videos[stem].clip_frames`` (inclusive)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fusewatch.engines.data.align import assemble
from fusewatch.engines.data.arrays import load_feature_array
from fusewatch.engines.data.ground_truth import apply_gt, read_labels_json
from fusewatch.engines.data.records import ClipRule, FeatureDataset, VideoFeatures
from fusewatch.errors import DataNotFoundError, DatasetError

log = logging.getLogger("fusewatch.datasets")

UNLISTED_SHOWN = 5
"""How many feature files not listed in ``meta.json`` the warning names."""


def _bad(meta_p: Path, field: str, value: object, want: str) -> DatasetError:
    """The error for a ``meta.json`` field of the wrong type (names the file and the field)."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return DatasetError(f"{meta_p}: field {field!r} must be {want}, got {shown}")


def _object(meta_p: Path, field: str, value: object) -> dict[str, Any]:
    """An optional JSON object field (``None`` → ``{}``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(meta_p, field, value, "an object")
    return value


def _integer(meta_p: Path, field: str, value: object, minimum: int) -> int | None:
    """An optional integer field ≥ ``minimum`` (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:  # also rejects "16", 16.5
        raise _bad(meta_p, field, value, f"an integer ≥ {minimum}")
    return value


def _is_frame(x: object) -> bool:
    """A 0-based frame number (an integer ≥ 0, not ``true``/``false``)."""
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _clip_frames(meta_p: Path, name: str, cf: object) -> list[tuple[int, int]] | None:
    """``videos[name].clip_frames``: a list of inclusive ``[start, end]`` frame pairs, or ``None``."""
    if cf is None:
        return None
    field = f"videos.{name}.clip_frames"
    if not isinstance(cf, list):
        raise _bad(meta_p, field, cf, "a list of [start, end] frame pairs")
    for i, pair in enumerate(cf):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_frame(x) for x in pair)):
            raise _bad(meta_p, f"{field}[{i}]", pair, "a pair [start, end] of frame numbers")
    return [(int(s), int(e)) for s, e in cf]


def read_meta(root: Path) -> dict[str, Any]:
    """``root/meta.json`` checked: an object; ``representations`` and ``videos`` objects of objects;
    ``clip_len``/``clip_stride``/``dim``/``clips``/``frames`` integers; ``fps`` a number > 0.
    Anything else raises :class:`DatasetError` naming the file and the field."""
    meta_p = root / "meta.json"
    if not meta_p.exists():
        raise DataNotFoundError(f"{root}: no meta.json (not a fusewatch feature directory)")
    try:
        meta = json.loads(meta_p.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{meta_p}: invalid JSON ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{meta_p}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_p}: expected a JSON object, got {type(meta).__name__}")
    for k in ("clip_len", "clip_stride"):
        _integer(meta_p, k, meta.get(k), 1)
    for r, rm in _object(meta_p, "representations", meta.get("representations")).items():
        _integer(meta_p, f"representations.{r}.dim", _object(meta_p, f"representations.{r}", rm).get("dim"), 1)
    for n, vm in _object(meta_p, "videos", meta.get("videos")).items():
        vm = _object(meta_p, f"videos.{n}", vm)
        for k in ("clips", "frames"):
            _integer(meta_p, f"videos.{n}.{k}", vm.get(k), 0)
        fps = vm.get("fps")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
            raise _bad(meta_p, f"videos.{n}.fps", fps, "a number > 0")
        _clip_frames(meta_p, n, vm.get("clip_frames"))
    return meta


def warn_unlisted(root: Path, reps: Sequence[str], listed: set[str]) -> None:
    """Warn about ``<rep>/*.npy`` files whose video ``meta.json`` does not list (they are ignored)."""
    unlisted = sorted(f"{r}/{f.name}" for r in reps for f in (root / r).glob("*.npy") if f.stem not in listed)
    if unlisted:
        more = f" and {len(unlisted) - UNLISTED_SHOWN} more" if len(unlisted) > UNLISTED_SHOWN else ""
        log.warning(
            "%s: %d feature file(s) ignored because meta.json does not list their videos: %s%s "
            "(re-run `fusewatch extract` on those videos to register them)",
            root,
            len(unlisted),
            ", ".join(unlisted[:UNLISTED_SHOWN]),
            more,
        )


def load_fusewatch_dir(
    path: str | Path, representations: Sequence[str] | None = None, labels: str | Path | None = None
) -> FeatureDataset:
    """Layout written by ``fusewatch extract`` (``meta.json``, ``<rep>/<video>.npy``, ``labels.json``)."""
    root = Path(path)
    meta = read_meta(root)
    rep_meta = meta.get("representations") or {}
    reps = list(rep_meta) or sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.npy")))
    if representations:
        unknown = [r for r in representations if r not in reps]
        if unknown:
            raise DatasetError(
                f"unknown representation {', '.join(unknown)} in {root} (available: {', '.join(reps) or 'none'})"
            )
        reps = list(representations)
    if not reps:
        raise DatasetError(f"{root}: no representations (meta.json lists none and no <rep>/*.npy folders)")
    vmeta = meta.get("videos") or {}
    if vmeta:
        warn_unlisted(root, reps, set(vmeta))
    names = list(vmeta) or sorted({f.stem for r in reps for f in (root / r).glob("*.npy")})
    if not names:
        raise DatasetError(f"{root}: no videos")
    clip_len = int(meta.get("clip_len") or 16)  # frames per clip (default 16)
    clip_stride = int(meta.get("clip_stride") or clip_len)
    per_rep: dict[str, dict[str, np.ndarray]] = {r: {} for r in reps}
    for r in reps:
        for n in names:
            f = root / r / f"{n}.npy"
            if f.exists():
                per_rep[r][n] = load_feature_array(f)
    for r in list(reps):
        if not per_rep[r]:  # e.g. audio when no video had an audio track
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
    aligned, dims = assemble(per_rep)
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
        cf = _clip_frames(root / "meta.json", n, vm.get("clip_frames"))
        if cf is not None:
            if len(cf) != T:
                if len(cf) > T:
                    cf = cf[:T]
                else:
                    log.warning(
                        "video %s: meta.json has %d clip ranges for %d clips: using clip_len rule", n, len(cf), T
                    )
                    cf = None
        if vm.get("clips") is not None and int(vm["clips"]) != T:
            log.warning("video %s: meta.json says %s clips, features have %d", n, vm["clips"], T)
        v = VideoFeatures(
            name=n,
            feats=feats,
            clip_to_frames=cf if cf is not None else ClipRule(clip_len, clip_stride),
            n_frames=vm.get("frames"),
            fps=vm.get("fps"),
            source=str(root),
        )
        videos.append(apply_gt(v, gt.get(n)))
    if not videos:
        raise DatasetError(f"{root}: no videos with features")
    return FeatureDataset(
        videos,
        dims,
        "fusewatch",
        str(root),
        {
            "clip_len": clip_len,
            "clip_stride": clip_stride,
            "sample_fps": meta.get("sample_fps"),
            "versions": {r: (rep_meta.get(r) or {}).get("version") for r in dims},
        },
    )
