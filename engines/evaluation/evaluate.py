"""Evaluation: frame-level ROC-AUC / AP of a trained model (or of precomputed clip scores).

:func:`evaluate` loads a checkpoint and a feature dataset, scores every clip with the causal
streaming protocol (:func:`fusewatch.engines.evaluation.scoring.score_video`: clip ``t`` = last node of the window of clips
``[t−N+1 .. t]``) and hands the scores to :func:`evaluate_scores`.

:func:`evaluate_scores` takes per-video clip scores from anywhere (e.g. the streaming engine) plus
ground truth and clip→frame mapping, either as :class:`ScoredVideo` records or as
``{name: scores}`` with a dataset (path or :class:`fusewatch.engines.data.records.FeatureDataset`) that provides
them. It computes (:mod:`fusewatch.engines.evaluation.metrics`) pooled frame-level AUC/AP over the videos that have frame
ground truth (video-level AUC of the max clip score when none has), prints a rich table, writes the
JSON report and the plots.

JSON report keys: ``auc``, ``ap``, ``ap_kind`` (``"sklearn.average_precision_score"``), ``auc_kind``
(``frame``|``video``|``none``), ``frames`` (pooled frame count), ``abnormal_frames``, ``videos``,
``video_auc`` (max clip score per video vs. video labels, when both classes are present),
``per_video`` (name → ``clips``, ``frames``, ``abnormal_frames``, ``label``, ``auc``, ``ap``,
``max_score``, ``mean_score``), ``plots`` (written files), plus ``model``/``data`` when known.
Undefined numbers (one class only) are ``null``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fusewatch.engines.data import (
    FeatureDataset,
    VideoFeatures,
    as_dataset,
    load_dataset,
)
from fusewatch.engines.evaluation import metrics as M
from fusewatch.errors import DataNotFoundError, DatasetError, UsageError

log = logging.getLogger("fusewatch.evaluate")

MODEL_META_KEYS = (
    "path",
    "model_version",
    "fusion",
    "representations",
    "window",
    "dims",
    "epoch",
    "val_auc",
    "val_kind",
    "created",
)


@dataclass
class ScoredVideo:
    """Clip scores of one video with what is needed to evaluate them.

    ``clip_ranges``: 0-based inclusive frame range per clip (``len == len(scores)``);
    ``frame_gt``: 0/1 per frame or None; ``video_label``: 0/1, -1 unknown."""

    name: str
    scores: np.ndarray
    clip_ranges: list[tuple[int, int]]
    frame_gt: np.ndarray | None = None
    video_label: int = -1
    n_frames: int | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).ravel()
        if len(self.clip_ranges) != self.scores.size:
            raise DatasetError(
                f"video {self.name}: {self.scores.size} clip scores but {len(self.clip_ranges)} clip frame ranges"
            )
        if self.frame_gt is not None:
            self.frame_gt = (np.asarray(self.frame_gt).ravel() > 0).astype(np.uint8)
        if self.video_label not in (0, 1) and self.frame_gt is not None:
            self.video_label = int(self.frame_gt.any())
        if self.frame_gt is not None and self.clip_ranges:
            span = max(e - s + 1 for s, e in self.clip_ranges)
            covered = max(e for _, e in self.clip_ranges) + 1
            if self.frame_gt.size - covered > span:
                raise DatasetError(
                    f"video {self.name}: its clips cover frames 0..{covered - 1} of its {self.frame_gt.size} "
                    f"labelled frames ({self.frame_gt.size - covered} frames without features: a truncated or "
                    "partly unreadable video?); an evaluation of part of a video is not reported — re-extract it "
                    "or remove it from the labels"
                )

    def frames(self) -> int:
        if self.frame_gt is not None:
            return int(self.frame_gt.size)
        if self.n_frames is not None:
            return int(self.n_frames)
        return int(self.clip_ranges[-1][1] + 1) if self.clip_ranges else 0

    def frame_scores(self) -> np.ndarray:
        return M.expand_to_frames(self.scores, self.clip_ranges, self.frames())


def scored_from_dataset(
    scores: Mapping[str, np.ndarray], data: FeatureDataset | Sequence[VideoFeatures]
) -> list[ScoredVideo]:
    """Pair ``{name: clip scores}`` with the dataset's ground truth and clip ranges (order of the
    dataset; videos without scores are skipped with a warning, unknown names raise ValueError)."""
    vids = list(data)
    known = {v.name for v in vids}
    unknown = [n for n in scores if n not in known]
    if unknown:
        raise DatasetError(f"scores for {len(unknown)} video(s) not in the data (e.g. {unknown[0]})")
    out, missing = [], 0
    for v in vids:
        if v.name not in scores:
            missing += 1
            continue
        s = np.asarray(scores[v.name], dtype=np.float64).ravel()
        if s.size != v.num_clips:
            raise DatasetError(f"video {v.name}: {s.size} scores for {v.num_clips} clips")
        out.append(ScoredVideo(v.name, s, v.clip_ranges(), v.frame_gt, v.video_label, v.n_frames, v.fps))
    if missing:
        log.warning("%d video(s) of the data have no scores: left out of the evaluation", missing)
    if not out:
        raise DatasetError("no scored videos to evaluate")
    return out


def _fmt(x: float | None, nd: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def print_report(report: Mapping[str, Any], console=None) -> None:
    """Rich table: one row per video (label, clips, frames, abnormal frames, AUC where defined,
    max clip score) and a pooled row (number of pooled videos in brackets)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"fusewatch eval — {report.get('auc_kind', '')}-level AUC", show_lines=False)
    width = min(22, max([len("pooled")] + [len(n) for n in report["per_video"]]))
    t.add_column("video", justify="left", min_width=width, no_wrap=True, overflow="ellipsis")
    for col, w in (("label", 5), ("clips", 5), ("frames", 6), ("abn.fr", 6), ("AUC", 6), ("max", 5)):
        t.add_column(col, justify="right", no_wrap=True, min_width=w)
    for name, r in report["per_video"].items():
        lab = {0: "norm", 1: "abn"}.get(r.get("label"), "?")
        t.add_row(
            name,
            lab,
            str(r["clips"]),
            str(r["frames"]),
            "—" if r.get("abnormal_frames") is None else str(r["abnormal_frames"]),
            _fmt(r.get("auc")),
            _fmt(r.get("max_score"), 3),
        )
    t.add_section()
    t.add_row(
        f"pooled ({report['videos']})",
        "",
        str(sum(r["clips"] for r in report["per_video"].values())),
        str(report["frames"]),
        str(report.get("abnormal_frames", "")),
        _fmt(report.get("auc")),
        "",
    )
    console.print(t)
    extra = f"AP {_fmt(report.get('ap'))} ({report['ap_kind']})"
    if report.get("video_auc") is not None:
        extra += f", video-level AUC {_fmt(report['video_auc'])}"
    console.print(extra)


def evaluate_scores(
    scores: Mapping[str, np.ndarray] | Sequence[ScoredVideo],
    data: str | Path | FeatureDataset | Sequence[VideoFeatures] | None = None,
    out_json: str | Path | None = None,
    plots_dir: str | Path | None = None,
    info: Mapping[str, Any] | None = None,
    print_table: bool = True,
    console=None,
    max_timelines: int | None = 100,
) -> dict[str, Any]:
    """Evaluate precomputed clip scores (module docstring). Returns the report dict.

    ``scores``: ``[ScoredVideo, ...]``, or ``{name: (T,) clip scores}`` together with ``data`` (a
    dataset path or object giving ground truth and clip→frame ranges). ``info``: extra keys for the
    report (e.g. ``{"model": {...}, "data": "..."}``). ``max_timelines``: at most this many timeline
    PNGs (None: all).
    """
    if isinstance(scores, Mapping):
        if data is None:
            raise DatasetError("evaluate_scores: {name: scores} needs data= for ground truth and clip ranges")
        ds = load_dataset(data, split="test") if isinstance(data, (str, Path)) else data
        videos = scored_from_dataset(scores, ds)
    else:
        videos = list(scores)
        if not videos:
            raise DatasetError("no scored videos to evaluate")
    with_gt = [v for v in videos if v.frame_gt is not None]
    if with_gt and len(with_gt) < len(videos):
        log.warning(
            "%d of %d video(s) have no frame ground truth: left out of the frame-level metrics",
            len(videos) - len(with_gt),
            len(videos),
        )
    per_video: dict[str, dict[str, Any]] = {}
    frame_scores: dict[str, np.ndarray] = {}
    for v in videos:
        fs = v.frame_scores()
        frame_scores[v.name] = fs
        rec: dict[str, Any] = {
            "clips": int(v.scores.size),
            "frames": int(fs.size),
            "label": int(v.video_label) if v.video_label in (0, 1) else None,
            "abnormal_frames": int(v.frame_gt.sum()) if v.frame_gt is not None else None,
            "auc": None,
            "ap": None,
            "max_score": float(v.scores.max()) if v.scores.size else None,
            "mean_score": float(v.scores.mean()) if v.scores.size else None,
        }
        if v.frame_gt is not None:
            rec["auc"] = M.nan_to_none(M.roc_auc(v.frame_gt, fs))
            rec["ap"] = M.nan_to_none(M.average_precision(v.frame_gt, fs))
        per_video[v.name] = rec
    fpr = tpr = np.zeros(0)
    if with_gt:
        y = np.concatenate([v.frame_gt for v in with_gt])
        s = np.concatenate([frame_scores[v.name] for v in with_gt])
        auc, ap = M.roc_auc(y, s), M.average_precision(y, s)
        fpr, tpr = M.roc_curve_points(y, s)
        kind, frames, abn = "frame", int(y.size), int(y.sum())
    else:
        frames, abn = 0, 0
        auc, ap, kind = math.nan, math.nan, "none"
    labelled = [v for v in videos if v.video_label in (0, 1)]
    vres = (
        M.video_level_metrics([float(v.scores.max()) for v in labelled], [v.video_label for v in labelled])
        if labelled
        else {"auc": math.nan, "ap": math.nan}
    )
    if kind == "none" and math.isfinite(vres["auc"]):
        auc, ap, kind = vres["auc"], vres["ap"], "video"
        fpr, tpr = M.roc_curve_points([v.video_label for v in labelled], [float(v.scores.max()) for v in labelled])
    report: dict[str, Any] = {
        "auc": M.nan_to_none(auc),
        "ap": M.nan_to_none(ap),
        "ap_kind": M.AP_KIND,
        "auc_kind": kind,
        "frames": frames,
        "abnormal_frames": abn,
        "videos": len(with_gt) if kind == "frame" else len(videos),
        "video_auc": M.nan_to_none(vres["auc"]),
        "per_video": per_video,
    }
    if info:
        report.update({k: v for k, v in info.items() if k not in report})
    plots: list[str] = []
    if plots_dir is not None:
        from fusewatch.engines.evaluation import plots as P

        pdir = Path(plots_dir)
        pdir.mkdir(parents=True, exist_ok=True)
        plots.append(
            str(
                P.plot_roc(
                    fpr,
                    tpr,
                    report["auc"],
                    pdir / "roc.png",
                    title=f"{kind}-level ROC" if kind != "none" else "ROC (undefined)",
                )
            )
        )
        todo = videos if max_timelines is None else videos[:max_timelines]
        if len(todo) < len(videos):
            log.info("plotting %d of %d timelines (max_timelines)", len(todo), len(videos))
        for v in todo:
            plots.append(
                str(
                    P.plot_timeline(
                        v.name,
                        frame_scores[v.name],
                        v.frame_gt,
                        pdir / "timelines" / f"{P.safe_filename(v.name)}.png",
                        fps=v.fps,
                        auc=per_video[v.name]["auc"],
                    )
                )
            )
    report["plots"] = plots
    if print_table:
        print_report(report, console)
    if out_json is not None:
        p = Path(out_json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def check_outputs(out_json: str | Path | None, plots_dir: str | Path | None) -> None:
    """Create the folders of ``--json`` / ``--plots`` before any scoring, so a path that cannot be
    written fails at once with one line instead of after the work."""
    for what, d in (("--json", Path(out_json).parent if out_json else None), ("--plots", plots_dir)):
        if d is None:
            continue
        try:
            Path(d).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"{what}: cannot create the folder {d} ({e.strerror or e})") from None
    if out_json and Path(out_json).is_dir():
        raise UsageError(f"--json {out_json}: is a folder")


def check_versions(model_versions: Mapping[str, str] | None, data_versions: Mapping[str, Any], names) -> None:
    """The data's extractor versions must be the model's training features' (as the engine checks
    every message): features of another extractor setting score without error but mean nothing."""
    for n in names:
        want, have = (model_versions or {}).get(n), data_versions.get(n)
        if want and have and str(want) != str(have):
            raise DatasetError(
                f"representation {n}: the data comes from extractor {have}, the model was trained on {want} "
                "(extract with the model's settings, or retrain)"
            )


def evaluate(
    model_path: str | Path,
    data_dir: str | Path | FeatureDataset | Sequence[VideoFeatures],
    out_json: str | Path | None = None,
    plots_dir: str | Path | None = None,
    batch_size: int = 256,
    print_table: bool = True,
    console=None,
    max_timelines: int | None = 100,
) -> dict[str, Any]:
    """Score ``data_dir`` with the checkpoint ``model_path`` (causal protocol) and evaluate.

    The data must hold every representation of the model with the model's dims (ValueError
    otherwise). For folders with ``*.list`` files the ``test`` lists are used. Returns the report
    (:func:`evaluate_scores`) with ``model`` (checkpoint metadata) and ``data`` keys.
    """
    from fusewatch.engines.evaluation.scoring import score_video
    from fusewatch.engines.training.checkpoint import load_model

    mp = Path(model_path)
    if not mp.exists():
        raise DataNotFoundError(f"model {mp}: not found")
    if isinstance(data_dir, (str, Path)) and not Path(data_dir).exists():
        raise DataNotFoundError(f"data {data_dir}: not found")
    check_outputs(out_json, plots_dir)
    model, meta = load_model(mp)
    names = list(model.names)
    ds = load_dataset(data_dir, split="test") if isinstance(data_dir, (str, Path)) else as_dataset(data_dir)
    missing = [n for n in names if n not in ds.dims]
    if missing:
        raise DatasetError(
            f"data {ds.root or data_dir} lacks representation {', '.join(missing)} needed by the "
            f"model (data has: {', '.join(ds.representations) or 'none'})"
        )
    for n in names:
        if int(ds.dims[n]) != int(model.dims[n]):
            raise DatasetError(f"representation {n}: the model expects dim {model.dims[n]}, the data has {ds.dims[n]}")
    check_versions(meta.extractor_versions, ds.info.get("versions") or {}, names)
    ds = ds.select(names)
    scores = {v.name: score_video(model, v.feats, batch_size=batch_size) for v in ds.videos}
    md = meta.to_dict()
    info = {
        "model": {k: md.get(k) for k in MODEL_META_KEYS if k in md},
        "data": str(ds.root or data_dir),
        "protocol": "causal: clip t = last node of window [t-N+1, t]",
    }
    return evaluate_scores(
        scored_from_dataset(scores, ds),
        out_json=out_json,
        plots_dir=plots_dir,
        info=info,
        print_table=print_table,
        console=console,
        max_timelines=max_timelines,
    )
