"""CLI: ``fusewatch calibrate`` — per-camera alert thresholds from a burn-in period of normal footage.

Scores the footage through the same worker → bus → engine path as live cameras, then sets
``on`` = the ``--percentile`` (default 99.5th) of the clip scores and ``off`` = the
``--off-percentile`` (default 95th, never above ``on``), and merges them into the per-camera
thresholds file the engine reads (``alerts.camera_thresholds_file``).

A live ``--source`` (RTSP, HTTP(S), a device) never ends: it needs ``--minutes K > 0`` and is read
from now on until the clips covering K minutes of stream time are scored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from fusewatch.errors import ConfigError, DataNotFoundError
from fusewatch.stream.config import CACHE_DIR, Config

VIDEO_EXT = (".mp4", ".avi", ".mkv", ".mov", ".ts")


def add_commands(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="per-camera thresholds from normal footage (burn-in) → alerts.camera_thresholds_file"
    )
    p.add_argument("--camera", required=True, help="camera id the thresholds are for")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--source", help="a recording or a live URI (rtsp://, http(s)://, a device: needs --minutes) of normal footage"
    )
    src.add_argument("--videos", help="folder of normal recordings of this camera (all scored in turn)")
    p.add_argument("--model", help="model (default engine.model / the demo's model)")
    p.add_argument(
        "--minutes",
        type=float,
        default=0,
        help="burn-in length: score at most K minutes of stream time (0: all of the files; a live source needs K > 0)",
    )
    p.add_argument("--percentile", type=float, default=99.5, help="`on` threshold percentile (default 99.5)")
    p.add_argument("--off-percentile", type=float, default=95.0, help="`off` threshold percentile (default 95)")
    p.add_argument(
        "--out", help="thresholds file (default alerts.camera_thresholds_file, else <cache>/camera_thresholds.json)"
    )
    p.set_defaults(handler=cmd_calibrate)


def thresholds(scores, pct_on: float, pct_off: float) -> tuple[float, float]:
    import numpy as np

    s = np.asarray(scores, np.float64)
    on = float(np.percentile(s, pct_on))
    return on, min(on, float(np.percentile(s, pct_off)))


def write_thresholds(path: Path, camera: str, entry: dict) -> None:
    """Merge ``camera``'s entry into the file (atomically replaced)."""
    d = {"v": 1, "cameras": {}}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
            d["cameras"] = dict(old.get("cameras", {}))
        except ValueError:
            raise ConfigError(f"{path}: exists and is not valid JSON") from None
    d["cameras"][camera] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(d, indent=1) + "\n")
    tmp.replace(path)


def _public_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part (it is written to the thresholds file)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def cmd_calibrate(args, cfg: Config) -> int:
    from fusewatch.engines.serving.pipeline import stream_videos
    from fusewatch.engines.serving.runtime import default_model_path, load_serving_model

    if not 0 < args.off_percentile <= args.percentile <= 100:
        raise ConfigError("--off-percentile/--percentile: need 0 < off <= on <= 100")
    if args.videos:
        d = Path(args.videos)
        if not d.is_dir():
            raise DataNotFoundError(f"--videos {d}: not a folder")
        sources = sorted(str(f) for f in d.iterdir() if f.suffix.lower() in VIDEO_EXT)
        if not sources:
            raise DataNotFoundError(f"--videos {d}: no video files ({', '.join(VIDEO_EXT)})")
    else:
        sources = [args.source]
    from fusewatch.stream.sources import parse_source

    live = bool(args.source) and parse_source(args.source, cfg.source).live
    if args.minutes < 0 or (live and not args.minutes > 0):
        raise ConfigError(
            "--minutes: need K > 0 for a live source (it never ends): the burn-in length in minutes"
            if live
            else "--minutes: must be >= 0 (0: all of the footage)"
        )
    model_path = Path(args.model or cfg.engine.model or default_model_path())
    if not model_path.is_file():
        raise DataNotFoundError(f"model {model_path}: not found (pass --model)")
    model = load_serving_model(cfg, model_path)
    cfg.transport = "bus"  # the burn-in is scored in-process: nothing is published to the site's topics
    cfg.engine.publish_scores = False
    scores, seconds = [], 0.0
    limit = args.minutes * 60 if args.minutes > 0 else float("inf")
    step = cfg.clips.clip_stride / cfg.source.sample_fps  # new stream time each clip covers (s)
    # a live source is stopped once the clips covering the K minutes are in (files: read to the end)
    max_clips = max(1, int(limit / step + 1e-9)) if live else None
    for i, src in enumerate(sources):  # one recording after another: the first K minutes in order
        if seconds >= limit:
            break
        res = stream_videos([src], cfg, model, camera_ids=[f"{args.camera}#{i}"], max_clips=max_clips)
        for c in sorted(next(iter(res.clips.values()), []), key=lambda c: c.clip):
            if seconds + step > limit + 1e-9:  # (float sums: 15 × 0.8 s fit 12 s)
                break
            scores.append(c.score)
            seconds += step
    if len(scores) < 10:
        raise DataNotFoundError(f"calibrate: only {len(scores)} clips scored; need at least 10 (more footage)")
    on, off = thresholds(scores, args.percentile, args.off_percentile)
    out = Path(args.out or cfg.alerts.camera_thresholds_file or CACHE_DIR / "camera_thresholds.json").expanduser()
    write_thresholds(
        out,
        args.camera,
        {
            "on": round(on, 6),
            "off": round(off, 6),
            "percentile": args.percentile,
            "off_percentile": args.off_percentile,
            "clips": len(scores),
            "minutes": round(seconds / 60, 3),
            "sources": [_public_uri(s) for s in sources],
            "model": str(model_path),
            "model_version": model.meta.get("model_version", ""),
            "calibrated_at": time.time(),
        },
    )
    print(
        f"calibrate: camera {args.camera}: on={on:.4f} off={off:.4f} from {len(scores)} clips "
        f"({seconds / 60:.1f} min of normal footage) → {out}"
    )
    if not cfg.alerts.camera_thresholds_file or Path(cfg.alerts.camera_thresholds_file).expanduser() != out:
        print(f'calibrate: set alerts.camera_thresholds_file = "{out}" for the engine to use it')
    return 0
