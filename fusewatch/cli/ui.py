"""CLI: ``fusewatch ui`` (the live web UI over Kafka) and ``fusewatch labels export`` (:mod:`fusewatch.ui`)."""

from __future__ import annotations

import signal
import sys
import threading

from fusewatch.errors import ConfigError
from fusewatch.stream.config import Config


def add_commands(sub) -> None:
    p = sub.add_parser(
        "ui", help="live web UI: cameras, alerts, clips, labels (reads the alerts/scores/thumbnails topics)"
    )
    p.add_argument("--host", help="bind address (default ui.host = 127.0.0.1; others need ui.token and TLS)")
    p.add_argument("--port", type=int, help="port (default ui.port; 0 = any free port)")
    p.set_defaults(handler=cmd_ui)
    lp = sub.add_parser(
        "labels", help="operator labels of alerts: `labels export --out DIR` → a feature folder `fusewatch train` reads"
    )
    lp.add_argument(
        "action", choices=["export"], help="export: labelled alerts' evidence clips → features + labels.json"
    )
    lp.add_argument("--out", required=True, help="output folder (features + labels.json + videos/)")
    lp.set_defaults(handler=cmd_labels_export)


def apply_args(args, cfg: Config) -> None:
    if getattr(args, "host", None):
        cfg.ui.host = args.host
    if getattr(args, "port", None) is not None:
        cfg.ui.port = args.port
    cfg.ui.validate()


def serve_until_signal(srv) -> None:
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop.set())
    try:
        srv.wait(stop)
    finally:
        srv.stop()


def cmd_ui(args, cfg: Config) -> int:
    if cfg.transport != "kafka":
        raise ConfigError(
            "`fusewatch ui` reads the topics of running workers and engines: use --transport kafka "
            "(`fusewatch demo --ui` serves the in-process demo)"
        )
    apply_args(args, cfg)
    from fusewatch.stream.transport import make_transport
    from fusewatch.ui.server import UiServer

    srv = UiServer(cfg, make_transport(cfg, group_id=cfg.ui.group_id, produce=False)).start()
    print(
        f"ui: serving {srv.url} ({cfg.topics.alerts}, {cfg.topics.scores}, {cfg.topics.thumbnails}) — Ctrl-C to stop",
        flush=True,
    )
    serve_until_signal(srv)
    return 0


def cmd_labels_export(args, cfg: Config) -> int:
    from fusewatch.ui.labels import LabelStore, export_labels

    store = LabelStore(cfg.ui.data_dir)
    try:
        r = export_labels(store, cfg.ui.evidence_dir, args.out, cfg, progress=sys.stderr.isatty())
    finally:
        store.close()
    print(
        f"labels export: {r['videos']} clips ({r['normal']} normal = false positives, {r['abnormal']} abnormal = "
        f"acknowledged) → {args.out}"
        + (f"; {len(r['missing'])} labelled alerts without an evidence clip" if r["missing"] else "")
    )
    return 0
