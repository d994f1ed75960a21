"""CLI: ``fusewatch notify`` — deliver the alerts topic to MQTT and HTTP webhooks (:mod:`fusewatch.sinks`)."""

from __future__ import annotations

import signal
import sys
import threading

from fusewatch.stream.config import Config


def add_commands(sub) -> None:
    p = sub.add_parser("notify", help="deliver alerts to MQTT / HTTP webhooks (own consumer group, at-least-once)")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="MQTT broker (sets mqtt.host / mqtt.port)")
    p.add_argument("--webhook", metavar="URL", action="append", help="webhook URL (repeatable; sets webhook.urls)")
    p.add_argument("--group", help="consumer group id (default notify.group_id)")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new consumer group starts at the topic's start (default: only new alerts)",
    )
    p.add_argument("--idle-exit", type=float, metavar="S", help="exit after S seconds without alerts")
    p.set_defaults(handler=cmd_notify)


def cmd_notify(args, cfg: Config) -> int:
    if cfg.transport != "kafka":
        raise ValueError("`fusewatch notify` consumes the alerts topic: use --transport kafka")
    if args.mqtt:
        host, _, port = args.mqtt.rpartition(":") if args.mqtt.count(":") == 1 else (args.mqtt, "", "")
        cfg.mqtt.host, cfg.mqtt.port = host, int(port) if port else cfg.mqtt.port
    if args.webhook:
        cfg.webhook.urls = list(args.webhook)
    if args.group:
        cfg.notify.group_id = args.group
    cfg.validate()
    from fusewatch.sinks import build_sinks
    from fusewatch.sinks.notifier import Notifier
    from fusewatch.stream.transport import make_transport

    stop = threading.Event()
    sinks = build_sinks(cfg, stop)
    t = make_transport(cfg, group_id=cfg.notify.group_id)
    n = Notifier(cfg, t, sinks, stop)
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop.set())
    print(
        f"notify: {cfg.topics.alerts} (group {cfg.notify.group_id}) → {', '.join(s.name for s in sinks)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        n.subscribe(from_beginning=args.from_beginning)
        st = n.run(idle_exit_s=args.idle_exit)
    finally:
        n.close()
        t.close()
    dl = sum(getattr(s, "dead_lettered", 0) for s in sinks)
    print(
        f"notify: {st.records} records, {st.delivered} alerts delivered, {st.malformed} malformed skipped, "
        f"{dl} webhook dead letters, {st.retries} retries",
        file=sys.stderr,
        flush=True,
    )
    return 0
