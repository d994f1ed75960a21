"""Evaluation of the streaming path: replay → worker → transport → engine → scores, evaluated like
offline scores (:func:`fusewatch.engines.evaluation.evaluate.evaluate_scores`); ``fusewatch eval --stream``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fusewatch.engines.data import read_labels_json
from fusewatch.engines.evaluation.evaluate import ScoredVideo, check_outputs, evaluate_scores
from fusewatch.errors import DataNotFoundError, DatasetError

log = logging.getLogger("fusewatch.evaluate")


def evaluate_stream(
    model_path: str | Path,
    video_dir: str | Path,
    cfg,
    out_json=None,
    plots_dir=None,
    speed: float | None = None,
    print_table: bool = True,
) -> dict[str, Any]:
    """Scores produced by the streaming path (replay → worker → transport → engine) for every video
    in ``video_dir`` with frame labels in ``video_dir/labels.json``, evaluated like :func:`evaluate`."""
    from fusewatch.engines.serving.pipeline import stream_videos
    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.stream.extract import find_videos

    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise DataNotFoundError(f"--videos {video_dir}: not a directory")
    labels_path = video_dir / "labels.json"
    if not labels_path.is_file():
        raise DataNotFoundError(f"--videos {video_dir}: no labels.json with frame labels")
    check_outputs(out_json, plots_dir)
    labels = read_labels_json(labels_path)
    found, _ = find_videos([video_dir])
    videos = [v for v in found if v.stem in labels]
    if not videos:
        raise DatasetError(f"--videos {video_dir}: no video has an entry in labels.json")
    unlabelled = [v.name for v in found if v.stem not in labels]
    absent = sorted(set(labels) - {v.stem for v in found})
    for what, names in (
        ("video(s) without a labels.json entry", unlabelled),
        ("labels.json entries without a video", absent),
    ):
        if names:
            log.warning(
                "%s: %d %s left out: %s",
                video_dir,
                len(names),
                what,
                ", ".join(names[:8]) + (" ..." if len(names) > 8 else ""),
            )
    model = load_serving_model(cfg, model_path)
    res = stream_videos(videos, cfg, model, speed=speed, fresh_topics=True)
    scored = []
    published = res.replay.cameras if res.replay is not None else {}
    for v in videos:
        clips = res.clips.get(v.stem, [])
        want = published[v.stem].clips_published if v.stem in published else None
        if not clips or (want is not None and len(clips) < want):
            why = res.engine.get("dead_letter_reasons") or {}
            dropped = res.engine.get("dropped") or {}
            raise DatasetError(
                f"video {v.name}: the engine scored {len(clips)} of its {want if want is not None else '?'} clips"
                + (f" (dead letters: {', '.join(f'{k} ×{n}' for k, n in sorted(why.items()))})" if why else "")
                + (f" (dropped: {', '.join(f'{k} ×{n}' for k, n in sorted(dropped.items()))})" if dropped else "")
                + "; an evaluation of part of a video is not reported"
            )
        rec = labels[v.stem]
        scored.append(
            ScoredVideo(
                name=v.stem,
                scores=np.array([c.score for c in clips]),
                clip_ranges=[(c.frame_start, c.frame_end) for c in clips],
                frame_gt=rec.get("frame_gt"),
                fps=rec.get("fps"),
            )
        )
    info = {
        "model": str(model_path),
        "videos": str(video_dir),
        "scores": "streamed",
        "transport": cfg.transport,
        "backend": model.scorer.backend,
        "stream_wall_s": round(res.wall_s, 2),
        "clips": sum(len(c) for c in res.clips.values()),
    }
    return evaluate_scores(scored, out_json=out_json, plots_dir=plots_dir, info=info, print_table=print_table)
