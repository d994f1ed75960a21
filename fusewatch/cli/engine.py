"""CLI: ``fusewatch engine``, ``fusewatch export``, ``fusewatch alerts``."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fusewatch.errors import ExportError, UsageError
from fusewatch.stream.alert_schema import decode_alert, encode_alert
from fusewatch.stream.config import Config
from fusewatch.stream.logs import get_logger
from fusewatch.stream.records import decode_record, record_kind
from fusewatch.stream.schema import SchemaError
from fusewatch.stream.transport import make_transport

if TYPE_CHECKING:
    from rich.text import Text


def add_commands(sub) -> None:
    p = sub.add_parser("engine", help="consume feature messages, score clips, publish alerts")
    p.add_argument("--model", help="checkpoint (.pt) or exported ONNX (default: engine.model / demo model)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "tensorrt"))
    p.add_argument("--group", help="consumer group id (default engine.group_id)")
    p.add_argument("--idle-exit", type=float, metavar="S", help="exit after S seconds without messages")
    p.add_argument("--delay", type=float, default=0.0, help="artificial seconds per batch (testing a slow engine)")
    p.set_defaults(handler=cmd_engine)

    p = sub.add_parser("export", help="export a trained model to ONNX (graphs-in and features-in forms)")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=17, choices=range(17, 21), metavar="17..20")
    p.add_argument("--form", choices=("graphs", "features", "both"), default="both")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("alerts", help="tail the alert topic (table or JSON lines)")
    p.add_argument("--camera", help="only this camera id")
    p.add_argument("--from-beginning", action="store_true", help="read the topic from its start")
    p.add_argument("--json", action="store_true", help="one alert record (schema v2 JSON) per line")
    p.add_argument("--timeout", type=float, help="exit after S seconds without new alerts")
    p.set_defaults(handler=cmd_alerts)


def argparsesuppress():
    import argparse

    return argparse.SUPPRESS


def _install_stop(stop) -> None:
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, lambda *_: stop())


STALL_EXIT = 75


def start_watchdog(svc, stall_timeout: float) -> None:
    """Exit the process with :data:`STALL_EXIT` when ``svc`` makes no progress for ``stall_timeout``
    seconds (e.g. a Kafka client wedged inside poll): a supervisor (systemd ``Restart=``, Kubernetes,
    docker ``restart:``) starts a fresh engine, which rebuilds its state from the log."""
    if stall_timeout <= 0:
        return

    def watch():
        while not svc._stop.wait(min(5.0, stall_timeout / 4)):
            idle = time.monotonic() - svc.last_progress
            if idle > stall_timeout:
                print(
                    f"engine: no progress for {idle:.0f} s (engine.stall_timeout={stall_timeout:g}); "
                    f"exiting with status {STALL_EXIT} so that the supervisor restarts it",
                    file=sys.stderr,
                    flush=True,
                )
                os._exit(STALL_EXIT)

    threading.Thread(target=watch, name="engine-watchdog", daemon=True).start()


def cmd_engine(args, cfg: Config) -> int:
    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.serving.service import EngineService

    if args.group:
        cfg.engine.group_id = args.group
    log = get_logger("fusewatch.engine")
    if cfg.transport == "bus":
        log.warning(
            "engine: transport=bus: the in-process bus only carries messages produced in this "
            "process; use --transport kafka to consume workers running elsewhere"
        )
    if args.backend:
        cfg.engine.backend = args.backend
    watcher, model = _deployed_model(cfg, log)
    if model is None:
        model = load_serving_model(cfg, args.model, args.backend)
    t = make_transport(cfg, group_id=cfg.engine.group_id)
    svc = EngineService(cfg, model, t, delay_s=args.delay, watcher=watcher)
    _install_stop(svc.stop)
    start_watchdog(svc, cfg.engine.stall_timeout)
    fallback = getattr(model.scorer, "fallback_reason", "")
    log.info(
        f"engine: model {model.meta.fusion} {model.meta.model_version} "
        f"backend={model.scorer.backend} window={model.window} reps={','.join(model.names)} "
        f"transport={cfg.transport}" + (f" (backend {model.scorer.requested_backend}: {fallback})" if fallback else ""),
        extra={"fields": {"model_version": model.meta.model_version, "backend": model.scorer.backend}},
    )
    try:
        st = svc.run(idle_exit_s=args.idle_exit)
    finally:
        t.close()
    extra_counts = "".join(
        f", {k} {v}"
        for k, v in (
            ("dropped", st.dropped),
            ("restarts", st.restarts),
            ("cold starts", st.cold_starts),
            ("evictions", st.evictions),
        )
        if v
    )
    log.info(
        f"engine: {st.records} records, {st.scored} scored, {st.alerts} alerts, "
        f"{st.dead_letters} dead letters {st.dead_letter_reasons or ''}{extra_counts}",
        extra={
            "fields": {"records": st.records, "scored": st.scored, "alerts": st.alerts, "dead_letters": st.dead_letters}
        },
    )
    return 0


def _deployed_model(cfg: Config, log):
    """Live rollout (Kafka, ``engine.watch_models``): a model watcher on ``topics.models`` and the
    model of the deployment's current manifest, loaded and warmed (None: none published, or it
    failed — then ``--model`` is served and the failure logged)."""
    if cfg.transport != "kafka" or not cfg.engine.watch_models:
        return None, None
    from fusewatch.engines.serving.manifest import ModelWatcher, load_manifest
    from fusewatch.stream.topics import create_models_topic

    create_models_topic(cfg)
    w = ModelWatcher(cfg, make_transport(cfg, group_id=None, produce=False))
    m = w.read_current()
    if m is None:
        return w, None
    w.handled = m.ident
    got = load_manifest(cfg, m)
    if got.model is None:
        log.error(
            f"engine: deployment {w.name!r} manifest {m.version}: {got.reason}: {got.detail}; "
            "serving --model / engine.model instead"
        )
        return w, None
    log.info(f"engine: deployment {w.name!r}: model {m.version} from {m.model}")
    return w, got.model


def cmd_export(args, cfg: Config) -> int:
    from pathlib import Path

    from fusewatch.extras import require

    require("torch", "fusewatch export")
    from fusewatch.engines.export.onnx import export_onnx
    from fusewatch.engines.export.tensorrt_ops import check_onnx_for_tensorrt
    from fusewatch.engines.training.checkpoint import load_model

    model, meta = load_model(args.model)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ExportError(f"--out {out}: it or a parent of it is a file, not a directory") from None
    except OSError as e:
        raise ExportError(f"--out {out}: cannot create it ({e.strerror or e})") from None
    forms = ["graphs", "features"] if args.form == "both" else [args.form]
    if meta.fusion != "lego":
        forms = [f for f in forms if f != "graphs"] or ["features"]
    for form in forms:
        p = export_onnx(model, meta, out / f"{Path(args.model).stem}-{form}.onnx", form=form, opset=args.opset)
        problems = check_onnx_for_tensorrt(str(p))
        trt = "TensorRT parser: all ops supported" if not problems else f"TensorRT problems: {problems}"
        print(f"{p}  ({form}-in, N={meta.window}, opset {args.opset}; {trt})")
    return 0


def _fmt_t(ts: float) -> str:
    """``HH:MM:SS`` (UTC) of Unix seconds; ``?`` for values no calendar date can hold (NaN, ±huge)."""
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError, TypeError):
        return "?"


_CONTROL = dict.fromkeys(range(0x20), "?") | {0x7F: "?"}


def _plain(s: object, width: int | None = None) -> str:
    """A field as one line of plain text, cut to ``width``: control characters and characters that
    cannot be encoded (lone surrogates) replaced by ``?`` — such text must never reach the rich
    console, whose buffer would keep it and fail every later print."""
    out = str(s).translate(_CONTROL).encode("utf-8", "replace").decode("utf-8")
    return out if width is None else out[:width]


def _json_safe(v):
    """``v`` with every non-finite float (NaN, ±Infinity; not JSON) replaced by None, recursively."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _json_line(obj) -> str:
    """One JSON line for ``--json``: valid JSON (NaN/Infinity → null), UTF-8 encodable (text that
    is not, e.g. a lone surrogate, escaped as ``\\uXXXX``)."""
    line = json.dumps(_json_safe(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(_json_safe(obj), separators=(",", ":"), allow_nan=False)
    return line


def _print_json(line: str) -> None:
    """Print a JSON line; where stdout cannot encode its text (an ASCII locale), print it with
    ``\\uXXXX`` escapes instead — the same JSON value."""
    try:
        print(line, flush=True)
    except UnicodeEncodeError:
        print(json.dumps(json.loads(line), separators=(",", ":")), flush=True)


def _skip_reason(e: BaseException) -> str:
    """The reason a record was skipped: the schema reason code, else the exception type."""
    return e.reason if isinstance(e, SchemaError) and isinstance(e.reason, str) else type(e).__name__


def alert_line(a) -> Text:
    """One table row as a rich :class:`Text` (never parsed as markup: camera ids like
    ``[bold red]`` or ``[/]`` print literally)."""
    from rich.text import Text

    style = {"new": "bold red", "update": "yellow", "end": "green"}.get(a.type, "")
    return Text(
        f"{_fmt_t(a.end_time):8}  {_plain(a.type, 6):6}  {_plain(a.camera, 16):16}  {a.score:5.2f}  "
        f"{a.peak:5.2f}  {a.start_clip:>5}-{a.end_clip:<5}  {_plain(a.id)}",
        style=style,
    )


def record_line(obj: dict) -> Text:
    """A table row for an ``evidence`` or ``health`` record (:mod:`fusewatch.stream.records`)."""
    from rich.text import Text

    if obj["kind"] == "health":
        style = "green" if obj["state"] == "ok" else "bold magenta"
        return Text(
            f"{_fmt_t(obj['since']):8}  {'health':6}  {_plain(obj['camera'], 16):16}  "
            f"{_plain(obj['state'], 12):12}  {_plain(obj['detail'], 120)}",
            style=style,
        )
    clip = obj["clip"] or {}
    return Text(
        f"{_fmt_t(obj['produced']):8}  {'clip':6}  {_plain(obj['camera'], 16):16}  "
        f"{float(clip.get('duration', 0)):5.1f}s  {_plain(clip.get('url', ''), 200)}  "
        f"{_plain(obj['alert_id'])}",
        style="cyan",
    )


def _encodable(text: Text, encoding: str) -> Text:
    """``text`` if the console can write it in ``encoding``, else a copy with unencodable
    characters replaced (rich keeps unwritable text in its buffer and fails every later print)."""
    try:
        text.plain.encode(encoding or "utf-8")
        return text
    except (UnicodeEncodeError, LookupError):
        safe = text.copy()
        safe.plain = text.plain.encode(encoding or "utf-8", "replace").decode(encoding or "utf-8")
        return safe


def _render(r, args, cfg: Config):
    """What ``fusewatch alerts`` shows for record ``r``: a JSON line (``--json``), a table row, or
    None (another camera). Raises whatever decoding or formatting the record raises."""
    kind = record_kind(r.value)
    if kind in ("evidence", "health"):
        obj = decode_record(r.value, kind, cfg.max_message_bytes)
        if args.camera and obj["camera"] != args.camera:
            return None
        return _json_line(obj) if args.json else record_line(obj)
    a = decode_alert(r.value, cfg.max_message_bytes)
    if args.camera and a.camera != args.camera:
        return None
    if args.json:  # the version-2 record (v1 records are shown converted)
        return encode_alert(a).decode("utf-8")
    return alert_line(a)


def cmd_alerts(args, cfg: Config) -> int:
    """Tail the alert topic. A record that cannot be decoded or shown (whatever the exception) is
    skipped — counted by reason, the first of each reason reported on stderr with its position, the
    counts printed at the end — it never ends the tail."""
    if cfg.transport != "kafka":
        raise UsageError(
            "`fusewatch alerts` tails a Kafka topic: use --transport kafka "
            "(the in-process bus lives inside one process; `fusewatch demo` prints its alerts)"
        )
    from rich.console import Console

    console = Console(highlight=False)
    t = make_transport(cfg, group_id=None)
    group = f"fusewatch-alerts-{int(time.time() * 1000)}"  # private group: every tail sees all alerts
    t.subscribe([cfg.topics.alerts], group, from_beginning=args.from_beginning)
    stop = threading.Event()
    _install_stop(stop.set)
    last = time.monotonic()
    shown = 0
    skipped: dict[str, int] = {}  # reason -> records
    if not args.json:
        console.print(
            f"{'time':8}  {'type':6}  {'camera':16}  {'score':>5}  {'peak':>5}  {'clips':>11}  alert id",
            style="bold",
            markup=False,
        )
    try:
        while not stop.is_set():
            recs = t.poll(200, 0.5)
            if recs:
                last = time.monotonic()
            elif args.timeout is not None and time.monotonic() - last > args.timeout:
                break
            for r in recs:
                try:
                    out = _render(r, args, cfg)
                    if out is None:
                        continue
                    if args.json:
                        _print_json(out)
                    else:
                        console.print(_encodable(out, console.encoding))
                    shown += 1
                except Exception as e:  # noqa: BLE001 - one record never ends the tail
                    reason = _skip_reason(e)
                    skipped[reason] = skipped.get(reason, 0) + 1
                    if skipped[reason] == 1:
                        detail = e if isinstance(e, SchemaError) else f"{type(e).__name__}: {e}"
                        print(
                            f"skipping malformed alert at {_plain(r.topic)}[{r.partition}]@{r.offset}: "
                            f"{_plain(detail, 300)}" + " (later records with this reason: counted only)",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        t.close()
        if skipped:
            by = ", ".join(f"{_plain(k, 40)} {n}" for k, n in sorted(skipped.items()))
            print(f"alerts: {shown} shown, {sum(skipped.values())} malformed record(s) skipped ({by})", file=sys.stderr)
    return 0
