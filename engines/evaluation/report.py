"""Self-contained HTML report of a streamed run: score timeline per camera (inline SVG) with alerts
and ground truth marked, and per alert a thumbnail (base64 JPEG) of its peak clip's middle frame with
the alert's anomaly map drawn over it in red where the model gives one (:mod:`fusewatch.engines.serving.anomaly_map`)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Mapping

import numpy as np

from fusewatch.engines.serving.pipeline import StreamResult


def _frame_jpeg(video: str | Path, frame_index: int, width: int = 240, anomaly_map=None) -> str | None:
    """Decode ``frame_index`` (0-based decoded-frame index) of ``video`` → base64 JPEG (with the
    anomaly map, rows × cols in [0, 1], drawn over it when given), or None."""
    try:
        import av
        import cv2

        from fusewatch.stream.evidence.cut import overlay_map

        with av.open(str(video)) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i == frame_index:
                    img = f.to_ndarray(format="rgb24")
                    h, w = img.shape[:2]
                    img = cv2.resize(img, (width, max(1, int(h * width / w))))
                    if anomaly_map:
                        img = overlay_map(img, anomaly_map)
                    img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
                    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
                    return base64.b64encode(buf.tobytes()).decode() if ok else None
    except Exception:  # a thumbnail is decoration: never fail the report for it
        return None
    return None


def frame_scores(clips, n_frames: int) -> np.ndarray:
    """Per-frame scores ``(n_frames,)`` of a camera's scored clips: the mean of the clips covering
    each frame (overlapping clips), the nearest clip's score where none does
    (:func:`fusewatch.engines.evaluation.metrics.expand_to_frames`, as ``fusewatch eval`` scores frames)."""
    from .metrics import expand_to_frames

    return expand_to_frames([c.score for c in clips], [(c.frame_start, c.frame_end) for c in clips], n_frames)


def _svg(clips, alerts, gt: np.ndarray | None, on: float, off: float, w: int = 900, h: int = 160) -> str:
    if not clips:
        return "<p>no scored clips</p>"
    n_frames = max(c.frame_end for c in clips) + 1
    if gt is not None:
        n_frames = max(n_frames, len(gt))
    x = lambda f: 40 + (w - 50) * f / max(1, n_frames)  # noqa: E731
    y = lambda s: 10 + (h - 30) * (1 - s)  # noqa: E731
    parts = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="10">']
    if gt is not None and gt.any():
        d = np.diff(np.concatenate([[0], gt.astype(int), [0]]))
        for s, e in zip(np.where(d == 1)[0], np.where(d == -1)[0]):
            parts.append(
                f'<rect x="{x(s):.1f}" y="10" width="{x(e) - x(s):.1f}" height="{h - 30}" '
                f'fill="#f4c7c3" opacity="0.6"><title>ground truth: frames {s}-{e - 1}</title></rect>'
            )
    for a in alerts:
        fs = next((c.frame_start for c in clips if c.clip == a["start_clip"]), 0)
        fe = next((c.frame_end for c in clips if c.clip == a["end_clip"]), n_frames)
        parts.append(
            f'<rect x="{x(fs):.1f}" y="{h - 18}" width="{max(2, x(fe) - x(fs)):.1f}" height="6" '
            f'fill="#c62828"><title>alert {a["id"]} clips {a["start_clip"]}-{a["end_clip"]}</title></rect>'
        )
    for thr, col in ((on, "#c62828"), (off, "#2e7d32")):
        parts.append(
            f'<line x1="40" x2="{w - 10}" y1="{y(thr):.1f}" y2="{y(thr):.1f}" stroke="{col}" stroke-dasharray="4 3"/>'
        )
    fs = frame_scores(clips, n_frames)
    step = max(1, n_frames // 1000)  # at most ~1000 points: the largest score of each run of frames
    pts = " ".join(f"{x(i + step / 2):.1f},{y(float(fs[i : i + step].max())):.1f}" for i in range(0, n_frames, step))
    parts.append(f'<polyline points="{pts}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    parts.append(
        f'<text x="2" y="{y(1) + 4:.0f}">1.0</text><text x="2" y="{y(0) + 4:.0f}">0.0</text>'
        f'<text x="{w - 80}" y="{h - 2}">frames 0..{n_frames - 1}</text></svg>'
    )
    return "".join(parts)


def write_report(
    path: str | Path,
    res: StreamResult,
    videos: Mapping[str, str | Path],
    labels: Mapping[str, dict] | None = None,
    on: float = 0.6,
    off: float = 0.4,
    title: str = "fusewatch demo",
) -> Path:
    """Write the HTML report to ``path``; ``videos`` maps camera id → file (for thumbnails),
    ``labels`` optional per-camera ``labels.json`` entries (frame ground truth, shaded)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    final: dict[str, dict] = {}
    for a in res.alerts:  # last event per alert id
        final[a.id] = {
            "id": a.id,
            "camera": a.camera,
            "type": a.type,
            "start_clip": a.start_clip,
            "end_clip": a.end_clip,
            "peak": a.peak,
            "start_time": a.start_time,
            "anomaly_map": a.anomaly_map,
        }
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}.cam{margin-bottom:2em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{sum(len(v) for v in res.clips.values())} clips scored on {len(res.clips)} cameras in "
        f"{res.wall_s:.1f} s; {len(final)} alerts. Blue: per-frame score (mean of the clips covering each frame); red bars: alerts; shaded: "
        f"ground-truth anomalous frames; dashed: on/off thresholds ({on:.2f}/{off:.2f}).</p>",
    ]
    for cam in sorted(res.clips):
        clips = res.clips[cam]
        cam_alerts = [a for a in final.values() if a["camera"] == cam]
        gt = None
        if labels and cam in labels and "labels" in labels[cam]:
            gt = np.frombuffer(labels[cam]["labels"].encode(), np.uint8) - ord("0")
        out.append(f"<div class='cam'><h2>{html.escape(cam)}</h2>{_svg(clips, cam_alerts, gt, on, off)}")
        if cam_alerts:
            out.append("<table><tr><th>alert</th><th>clips</th><th>peak</th><th>peak clip (anomaly map)</th></tr>")
            for a in cam_alerts:
                span = [c for c in clips if a["start_clip"] <= c.clip <= a["end_clip"]]
                c0 = max(span, key=lambda c: c.score) if span else None
                thumb = (
                    _frame_jpeg(videos[cam], (c0.frame_start + c0.frame_end) // 2, anomaly_map=a.get("anomaly_map"))
                    if c0 and cam in videos
                    else None
                )
                img = f"<img src='data:image/jpeg;base64,{thumb}'>" if thumb else "(no thumbnail)"
                out.append(
                    f"<tr><td><code>{a['id']}</code></td><td>{a['start_clip']}–{a['end_clip']}</td>"
                    f"<td>{a['peak']:.2f}</td><td>{img}</td></tr>"
                )
            out.append("</table>")
        out.append("</div>")
    out.append("</body></html>")
    path.write_text("\n".join(out))
    return path
