"""``fusewatch worker``, ``replay`` and ``extract``: the camera-side commands.

``worker`` and ``replay`` exit with :data:`LOST_EXIT` (1) and a one-line summary on stderr when any
clip was finally not delivered; a message over a size limit is a one-line error (status 2) at once.
"""

from __future__ import annotations

import sys

from fusewatch.errors import UsageError
from fusewatch.stream.logs import get_logger
from fusewatch.stream.signals import install_signal_handlers
from fusewatch.stream.worker import Worker

LOST_EXIT = 1
"""Exit status of ``worker`` / ``replay`` when clips were lost (not delivered)."""


def _cameras(args, cfg) -> list[tuple[str, str]]:
    """(id, uri) pairs from repeated ``--camera/--source``, ``--cameras FILE`` and ``worker.cameras``."""
    from fusewatch.stream.multi_worker import parse_cameras

    cams, srcs = list(args.camera or []), list(args.source or [])
    if len(cams) != len(srcs):
        raise UsageError(f"worker: give one --source per --camera (got {len(cams)} cameras, {len(srcs)} sources)")
    lines = list(cfg.worker.cameras)
    if getattr(args, "cameras", None):
        try:
            with open(args.cameras, encoding="utf-8") as f:
                lines += f.read().splitlines()
        except OSError as e:
            raise UsageError(f"--cameras: cannot read {args.cameras} ({e.strerror or e})") from None
    out = list(zip(cams, srcs)) + parse_cameras(lines)
    if not out:
        raise UsageError("worker: no camera (give --camera ID --source URI, --cameras FILE or worker.cameras)")
    return out


def _model_features(args, cfg):
    """``--model M``: the extractors the model needs (its representations, versions checked; one-line
    error at start-up on a mismatch), else ``features.extractors`` as configured."""
    if not getattr(args, "model", None):
        return cfg
    from fusewatch.engines.serving.model_features import features_for_model

    return features_for_model(cfg, args.model)


def cmd_worker(args, cfg) -> int:
    """``fusewatch worker --camera ID --source URI [--camera ID --source URI ...] [--cameras FILE] [--model M]``."""
    cfg = _model_features(args, cfg)
    if getattr(args, "metrics_port", None) is not None:
        cfg.worker.metrics_port = args.metrics_port
        cfg.worker.validate()
    cameras = _cameras(args, cfg)
    if cfg.transport == "bus":
        get_logger("fusewatch.stream.worker", camera=cameras[0][0]).warning(
            "transport=bus: the in-process bus lives inside this process, so no engine elsewhere sees "
            "these messages; use --transport kafka (or `fusewatch demo` / `replay` for an embedded run)"
        )
    if len(cameras) > 1:
        return _multi_worker(cfg, cameras)
    w = Worker(cfg, camera=cameras[0][0], source=cameras[0][1])
    ev = start_evidence_writer(cfg, [cameras[0][0]])
    restore = install_signal_handlers(w.stop)
    try:
        st = w.run()
    finally:
        restore()
        if ev is not None:
            ev.stop(drain_s=cfg.evidence.wait_s, flush_open=True)
    if st.warning:
        get_logger("fusewatch.stream.worker", camera=st.camera).warning(st.warning)
    print(
        f"worker {st.camera}: {st.clips_published} clips published, {st.clips_lost} lost, "
        f"{st.frames_decoded} frames decoded, {st.frames_dropped} dropped",
        file=sys.stderr,
    )
    lost = st.lost_summary()
    if lost:
        print(f"fusewatch: worker: {lost}", file=sys.stderr)
        return LOST_EXIT
    return 0


def start_evidence_writer(cfg, cameras: list[str]):
    """With ``evidence.enabled``: an evidence writer thread for ``cameras`` in this process (alerts
    topic → clips from this host's packet buffer), group ``evidence.group_id-<cameras>``."""
    if not cfg.evidence.enabled:
        return None
    from fusewatch.stream.evidence.writer import EvidenceWriter
    from fusewatch.stream.transport import make_transport

    group = f"{cfg.evidence.group_id}-{','.join(sorted(cameras))[:200]}"
    return EvidenceWriter(
        cfg, make_transport(cfg, group_id=group), cameras=cameras, group_id=group, owns_transport=True
    ).start()


def _multi_worker(cfg, cameras) -> int:
    """Several cameras in this process: MultiWorker (shared, batched extractor pool)."""
    from fusewatch.stream.multi_worker import MultiWorker

    mw = MultiWorker(cfg, cameras)
    ev = start_evidence_writer(cfg, [c for c, _ in cameras])
    restore = install_signal_handlers(mw.stop)
    try:
        res = mw.run()
    finally:
        restore()
        if ev is not None:
            ev.stop(drain_s=cfg.evidence.wait_s, flush_open=True)
    for cam, st in res.cameras.items():
        err = res.errors.get(cam)
        print(
            f"worker {cam}: {st.clips_published} clips published, {st.clips_lost} lost, "
            f"{st.frames_decoded} frames decoded, {st.frames_dropped} dropped" + (f"; FAILED: {err}" if err else ""),
            file=sys.stderr,
        )
    lost = res.lost_summary()
    if lost:
        print(f"fusewatch: worker: {lost}", file=sys.stderr)
        return LOST_EXIT
    if len(res.errors) == len(cameras):
        print(f"fusewatch: worker: every camera failed; first: {next(iter(res.errors.values()))}", file=sys.stderr)
        return 2
    return 0


def _parse_speed(s: str) -> float | None:
    if str(s).strip().lower() in ("max", "inf", "0"):
        return None
    try:
        v = float(s)
    except ValueError:
        raise UsageError(f"--speed: expected a number or 'max' (got {s!r})") from None
    if not v > 0:
        raise UsageError(f"--speed: must be > 0 or 'max' (got {s!r})")
    return v


def cmd_replay(args, cfg) -> int:
    """``fusewatch replay FILE... [--speed 1.0|max] [--loop N] [--camera ID ...] [--model M]``."""
    from fusewatch.stream.replay import replay

    cfg = _model_features(args, cfg)

    if args.loop < 0:
        raise UsageError(f"--loop: must be >= 0 (0 = forever; got {args.loop})")
    from pathlib import Path

    ev = start_evidence_writer(cfg, args.camera or [Path(f).stem for f in args.files])
    try:
        res = replay(
            args.files,
            cfg,
            speed=_parse_speed(args.speed),
            loop=args.loop,
            camera_ids=args.camera or None,
            handle_signals=True,
        )
    finally:
        if ev is not None:
            ev.stop(drain_s=cfg.evidence.wait_s, flush_open=True)
    for cam, st in res.cameras.items():
        print(
            f"{cam}: {st.clips_published} clips, {st.clips_lost} lost, {st.frames_decoded} frames "
            f"decoded, {st.frames_dropped} dropped, {st.decode_errors} decode errors"
        )
    print(
        f"replay: {res.clips_published} clips from {len(res.cameras)} cameras "
        f"in {res.wall_s:.1f} s ({res.clips_lost} lost)"
    )
    lost = res.lost_summary()
    if lost:
        print(f"fusewatch: replay: {lost}", file=sys.stderr)
        return LOST_EXIT
    return 0


def cmd_extract(args, cfg) -> int:
    """``fusewatch extract VIDEO_OR_DIR... --out DIR``."""
    from fusewatch.stream.extract import extract_videos

    out = extract_videos(args.inputs, args.out, cfg)
    print(out)
    return 0


def add_commands(subparsers) -> None:
    """Register ``worker``, ``replay`` and ``extract`` on an argparse subparsers object. Each
    parser gets ``handler=f(args, cfg) -> int`` via ``set_defaults``; handlers raise
    :class:`SourceError` / ``ConfigError`` for one-line user errors (print, exit 2)."""
    p = subparsers.add_parser(
        "worker",
        help="run one camera worker (source -> features topic)",
        description="Decode a camera/video source, extract clip features and produce them to the features topic.",
    )
    p.add_argument(
        "--camera",
        action="append",
        default=None,
        help="camera id (message key); repeat with --source for several cameras in one process",
    )
    p.add_argument(
        "--source",
        action="append",
        default=None,
        help="file path, rtsp://, http(s)://, /dev/videoN or v4l2://N (one per --camera)",
    )
    p.add_argument(
        "--cameras",
        default=None,
        metavar="FILE",
        help="file of 'ID=URI' lines: more cameras served by this process (shared batched extractors)",
    )
    p.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus metrics port (overrides worker.metrics_port)"
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="M",
        help="compute the features this model (.pt or .onnx) needs: its representations and "
        "extractor versions, instead of features.extractors (mismatch: error at start-up)",
    )
    p.set_defaults(handler=cmd_worker)

    p = subparsers.add_parser(
        "replay",
        help="replay video files as live cameras",
        description="One worker per file (camera id = file stem), paced in "
        "real time or as fast as possible; deterministic output.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--speed", default="1.0", help="playback speed factor, or 'max' (default 1.0)")
    p.add_argument("--loop", type=int, default=1, help="play each file N times (0 = forever)")
    p.add_argument(
        "--camera",
        action="append",
        default=None,
        help="camera id for the corresponding FILE (repeat; default: file stem)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="M",
        help="compute the features this model (.pt or .onnx) needs (as for `worker --model`)",
    )
    p.set_defaults(handler=cmd_replay)

    p = subparsers.add_parser(
        "extract",
        help="offline feature extraction to .npy files",
        description="Write FEAT_DIR/<representation>/<video_stem>.npy (clips x dim float32) and FEAT_DIR/meta.json.",
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=cmd_extract)
