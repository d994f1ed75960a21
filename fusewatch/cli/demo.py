"""``fusewatch demo``: replay Ped2 videos as cameras through worker → transport → engine (:mod:`fusewatch.engines.demo`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from fusewatch.engines.demo import DEFAULT_CAMERAS, ensure_model, streamed_eval
from fusewatch.errors import DataNotFoundError
from fusewatch.stream.config import Config
from fusewatch.stream.paths import shared_dir  # noqa: E402  (re-exported: ``$FUSEWATCH_SHARED`` or ../shared)


def add_commands(sub) -> None:
    p = sub.add_parser("demo", help="train/load the default model and replay videos through the whole pipeline")
    p.add_argument("--kafka", action="store_true", help="run over the local Kafka broker (fusewatch kafka up)")
    p.add_argument("--videos", help="directory laid out like ../shared/data/ped2 (default: the shared Ped2 data)")
    p.add_argument(
        "--cameras", default=",".join(DEFAULT_CAMERAS), help="video stems to replay as cameras (comma separated)"
    )
    p.add_argument(
        "--speed", default="max", help="replay speed: max (as fast as possible) or a factor, 1.0 = real time"
    )
    p.add_argument("--out", default="out/demo", help="report directory (default out/demo)")
    p.add_argument("--model", help="use this model instead of the cached default")
    p.add_argument("--retrain", action="store_true", help="retrain the default model")
    p.add_argument(
        "--evidence", help="evidence directory: a clip + snapshot per alert (default OUT/evidence; 'none' turns it off)"
    )
    p.add_argument(
        "--ui", action="store_true", help="serve the live web UI during the replay and keep serving after it"
    )
    p.add_argument("--ui-port", type=int, help="UI port (default ui.port; 0 = any free port)")
    p.set_defaults(handler=cmd_demo)


def quiet_info_logs(args) -> None:
    """The demo prints alerts for people: per-video INFO lines (worker started/finished …) would
    interleave with them, so the project's loggers show warnings and errors only unless a log level
    was asked for (``--log-level``, ``FUSEWATCH_LOG_LEVEL``)."""
    if getattr(args, "log_level", None) or os.environ.get("FUSEWATCH_LOG_LEVEL"):
        return
    logging.getLogger("fusewatch").setLevel(logging.WARNING)


def human_console():
    """A rich console whose lines never wrap at 80 columns when stdout is a pipe or a file
    (``soft_wrap``: one alert = one line; a terminal still wraps long lines itself)."""
    from rich.console import Console

    return Console(stderr=False, soft_wrap=True)


def read_demo_labels(video_dir: Path) -> dict[str, dict]:
    """``video_dir/labels.json`` (if there is one) → ``{camera: {"labels": "0101…", "frames", "fps"}}``
    for the videos with frame labels (one 0/1 character per frame), the form the report and the
    streamed AUC read. Checked before the replay: a broken file raises :class:`DatasetError`
    (one line naming the file and the field) instead of failing after it."""
    from fusewatch.engines.data.ground_truth import read_labels_json

    lp = video_dir / "labels.json"
    if not lp.exists():
        return {}
    out = {}
    for name, rec in read_labels_json(lp).items():
        gt = rec["frame_gt"]
        if gt is not None:
            out[name] = {"labels": "".join("1" if x else "0" for x in gt), "frames": rec["frames"], "fps": rec["fps"]}
    return out


def cmd_demo(args, cfg: Config) -> int:
    from fusewatch.engines.evaluation.report import write_report
    from fusewatch.engines.serving.pipeline import stream_videos
    from fusewatch.engines.serving.runtime import default_model_path, load_serving_model

    quiet_info_logs(args)
    console = human_console()
    log = lambda m: console.print(f"[dim]{m}[/dim]")  # noqa: E731
    if args.kafka:
        cfg.transport = "kafka"
    video_dir = Path(args.videos) if args.videos else shared_dir() / "data" / "ped2"
    if not video_dir.is_dir():
        raise DataNotFoundError(f"video directory {video_dir}: not found (pass --videos DIR)")
    labels = read_demo_labels(video_dir)  # before training and replaying: a broken file fails fast
    model_path = Path(args.model) if args.model else Path(cfg.engine.model or default_model_path())
    if not args.model:
        ensure_model(cfg, video_dir, model_path, retrain=args.retrain, log=log)
    from fusewatch.engines.serving.model_features import features_for_model

    cfg = features_for_model(cfg, model_path)  # the worker computes what this model needs
    model = load_serving_model(cfg, model_path)
    cams = [c.strip() for c in args.cameras.split(",") if c.strip()]
    videos = {}
    for c in cams:
        hits = sorted(video_dir.glob(f"{c}.*"))
        if not hits:
            raise DataNotFoundError(f"--cameras: no video named {c}.* in {video_dir}")
        videos[c] = hits[0]
    speed = None if args.speed == "max" else float(args.speed)
    ev_dir = args.evidence or str(Path(args.out) / "evidence")
    cfg.evidence.enabled = ev_dir.lower() != "none"
    if cfg.evidence.enabled:
        cfg.evidence.dir = ev_dir
    console.print(
        f"[bold]fusewatch demo[/bold]: {len(videos)} cameras → worker → "
        f"{'Kafka ' + cfg.kafka.bootstrap_servers if cfg.transport == 'kafka' else 'in-process bus'}"
        f" → engine ({model.meta.fusion} {model.meta.model_version}, "
        f"{model.scorer.backend}) → alerts"
    )

    def show(a):
        style = {"new": "bold red", "update": "yellow", "end": "green"}[a.type]
        console.print(
            f"  [{style}]{a.type:6}[/{style}] camera={a.camera:10} clips {a.start_clip:>3}–{a.end_clip:<3} "
            f"score={a.score:.2f} peak={a.peak:.2f} id={a.id}"
        )

    def show_evidence(r):
        with open(Path(cfg.evidence.dir) / "evidence.jsonl", "a") as f:  # the records, one per line
            f.write(json.dumps(r) + "\n")
        console.print(
            f"  [cyan]evidence[/cyan] camera={r['camera']:10} {r['clip']['duration']:5.1f} s "
            f"{Path(cfg.evidence.dir) / r['clip']['path']}"
            + (f" + {r['snapshot']['path'].rsplit('/', 1)[-1]}" if r["snapshot"] else "")
        )

    srv, bus = None, None
    if args.ui:
        from fusewatch.cli.ui import apply_args
        from fusewatch.stream.transport import BusTransport, InProcessBus, make_transport
        from fusewatch.ui.server import UiServer

        apply_args(argparse.Namespace(port=args.ui_port), cfg)
        if cfg.evidence.enabled:
            cfg.ui.evidence_dir = cfg.evidence.dir  # the UI plays the clips the evidence writer cuts
        bus = InProcessBus(partitions=cfg.topics.partitions) if cfg.transport == "bus" else None
        srv = UiServer(cfg, BusTransport(bus) if bus else make_transport(cfg, produce=False)).start()
        console.print(f"ui: {srv.url}")
    try:
        res = stream_videos(
            list(videos.values()),
            cfg,
            model,
            speed=speed,
            camera_ids=list(videos),
            on_alert=show,
            on_evidence=show_evidence,
            bus=bus,
        )
    except BaseException:
        if srv:
            srv.stop()
        raise
    out = Path(args.out)
    from fusewatch.engines.serving.service import effective_alerts

    eff = effective_alerts(cfg, model.meta)
    report = write_report(out / "report.html", res, videos, labels, eff.on, eff.off)
    n_clips = sum(len(v) for v in res.clips.values())
    console.print(
        f"{n_clips} clips scored, {len({a.id for a in res.alerts})} alerts, "
        f"{res.engine.get('dead_letters', 0)} dead letters in {res.wall_s:.1f} s"
    )
    from fusewatch.extras import have

    if labels and all(c in labels for c in res.clips) and have("sklearn"):  # AUC: the train extra
        rep = streamed_eval(res, labels, cfg)
        if rep is not None:
            console.print(f"frame-level ROC-AUC of the streamed scores on these cameras: {rep:.4f}")
    console.print(f"report: {report.resolve()}")
    if srv:
        from fusewatch.cli.ui import serve_until_signal

        console.print(f"ui: replay finished; still serving {srv.url} — Ctrl-C to stop")
        serve_until_signal(srv)
    return 0
