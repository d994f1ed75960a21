"""``bench ped2`` scoring comparison: one replay through worker → transport → one engine per model,
clip-by-clip agreement of streamed and offline scores, pooled frame-level AUCs (steps 5–6 of
:mod:`fusewatch.engines.bench.ped2`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fusewatch.stream.config import Config


def scored_videos(
    scores: Mapping[str, np.ndarray], ranges: Mapping[str, Sequence[tuple[int, int]]], gt: Mapping[str, np.ndarray]
) -> list:
    """``ScoredVideo`` records of the scored videos that have frame labels (and at least one clip)."""
    from fusewatch.engines.evaluation.evaluate import ScoredVideo

    return [
        ScoredVideo(n, np.asarray(scores[n]), [tuple(r) for r in ranges[n]], gt[n])
        for n in scores
        if n in gt and len(scores[n])
    ]


def frame_aucs(videos: list) -> dict[str, float | None]:
    """Pooled frame-level AUC over ``all`` labelled videos and over the ``anomalous`` ones."""
    from fusewatch.engines.evaluation.evaluate import evaluate_scores

    out: dict[str, float | None] = {"all": None, "anomalous": None}
    if videos:
        out["all"] = evaluate_scores(videos, print_table=False)["auc"]
        anom = [v for v in videos if v.frame_gt is not None and v.frame_gt.any()]
        if anom and any(not v.frame_gt.all() for v in anom):
            out["anomalous"] = evaluate_scores(anom, print_table=False)["auc"]
    return out


@dataclasses.dataclass
class StreamedClip:
    """One streamed clip score of a camera: clip index, score, 0-based inclusive frame range."""

    clip: int
    score: float
    frame_start: int
    frame_end: int


def stream_models(
    videos: Sequence[str | Path],
    cfg: Config,
    models: Mapping[str, Any],
    *,
    camera_ids: Sequence[str] | None = None,
    fresh_topics: bool = True,
    drain_timeout: float = 120.0,
    on_alert: Callable | None = None,
) -> dict[str, Any]:
    """Replay ``videos`` once through worker → transport → one :class:`EngineService` per serving
    model (``{name: ServingModel}``; :func:`fusewatch.engines.serving.pipeline.stream_videos_multi`), fresh Kafka
    topics deleted afterwards. Returns ``{"clips": {model: {camera: [StreamedClip]}}, "alerts":
    {model: [AlertMessage]}, "replay": replay stats, "engines": {model: stats}, "wall_s", "topics"}``.
    """
    from fusewatch.engines.serving.pipeline import stream_videos_multi

    res = stream_videos_multi(
        videos,
        cfg,
        models,
        camera_ids=camera_ids,
        on_alert=on_alert,
        fresh_topics=fresh_topics,
        delete_fresh_topics=fresh_topics,
        drain_timeout=drain_timeout,
    )
    any_res = next(iter(res.values()))
    return {
        "clips": {
            m: {
                cam: [StreamedClip(c.clip, c.score, c.frame_start, c.frame_end) for c in cl]
                for cam, cl in r.clips.items()
            }
            for m, r in res.items()
        },
        "alerts": {m: list(r.alerts) for m, r in res.items()},
        "replay": any_res.replay,
        "wall_s": any_res.wall_s,
        "engines": {m: r.engine for m, r in res.items()},
        "topics": [any_res.topics["features"], any_res.topics["alerts"], any_res.topics["dead_letter"]],
    }


def compare_scores(
    streamed: Mapping[str, Sequence],
    offline: Mapping[str, np.ndarray],
    ranges: Mapping[str, Sequence[tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """Clip-by-clip agreement of streamed records (``{camera: [clip records]}``, each with ``clip``,
    ``score``, ``frame_start``, ``frame_end``) and offline scores ``{camera: (T,)}``.

    Returns ``{"max_abs_diff", "clips", "count_mismatch": [camera...], "range_mismatch": [camera...],
    "missing": [camera...]}``."""
    worst, n = 0.0, 0
    count_bad, range_bad, missing = [], [], []
    for cam, off in offline.items():
        recs = sorted(streamed.get(cam, []), key=lambda c: c.clip)
        if not recs:
            missing.append(cam)
            continue
        if len(recs) != len(off) or [c.clip for c in recs] != list(range(len(off))):
            count_bad.append(cam)
            continue
        s = np.array([c.score for c in recs], np.float64)
        worst = max(worst, float(np.max(np.abs(s - np.asarray(off, np.float64)))) if len(off) else 0.0)
        n += len(off)
        if ranges is not None and [(c.frame_start, c.frame_end) for c in recs] != [
            tuple(map(int, r)) for r in ranges[cam]
        ]:
            range_bad.append(cam)
    return {
        "max_abs_diff": worst,
        "clips": n,
        "count_mismatch": count_bad,
        "range_mismatch": range_bad,
        "missing": missing,
    }
