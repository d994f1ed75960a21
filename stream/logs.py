"""Structured logging for every command: text lines or JSON lines (``cfg.log_format``).

One logger root, ``fusewatch``: every module logs under it (``fusewatch.stream.worker``,
``fusewatch.engine``, ...). :func:`setup_from_config` (called by the CLI for every command) puts one
handler on it and on kafka-python's ``kafka`` logger, leaves the root logger and any handler the
user configured alone, and redacts every configured secret (``kafka.sasl_plain_password``) from
every line the handler writes (message, fields and tracebacks alike).

Every record may carry structured fields passed with ``extra={"fields": {...}}`` or through
:func:`get_logger`'s bound fields (e.g. ``camera``); the text format appends them as ``k=v``,
the JSON format merges them into the object::

    log = get_logger("fusewatch.stream.worker", camera="cam1")
    log.info("reconnecting", extra={"fields": {"attempt": 2, "delay_s": 1.0}})
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Mapping

_ROOT = "fusewatch"
_HANDLER_TAG = "_fusewatch_handler"


class _Fields(logging.LoggerAdapter):
    """A logger adapter that merges bound fields with per-call ``extra={"fields": ...}``."""

    def process(self, msg, kwargs):
        extra = dict(kwargs.get("extra") or {})
        fields = dict(self.extra or {})
        fields.update(extra.get("fields") or {})
        extra["fields"] = fields
        kwargs["extra"] = extra
        return msg, kwargs

    def bind(self, **fields: Any) -> _Fields:
        merged = dict(self.extra or {})
        merged.update(fields)
        return _Fields(self.logger, merged)


def get_logger(name: str = _ROOT, **fields: Any) -> _Fields:
    """A logger whose records carry ``fields`` (e.g. ``camera="cam1"``)."""
    return _Fields(logging.getLogger(name), fields)


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    s = str(v)
    return json.dumps(s) if (" " in s or "=" in s or not s) else s


class TextFormatter(logging.Formatter):
    """``2024-01-01T00:00:00.123Z INFO fusewatch.stream.worker message k=v k2=v2``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        kv = " ".join(f"{k}={_fmt_value(v)}" for k, v in fields.items())
        line = f"{ts} {record.levelname} {record.name} {record.getMessage()}"
        if kv:
            line += " " + kv
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``{"ts", "level", "logger", "msg", **fields}``."""

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in (getattr(record, "fields", None) or {}).items():
            if k not in obj:
                obj[k] = v
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str, separators=(",", ":"))


REDACTED = "***"


class RedactingHandler(logging.StreamHandler):
    """A stream handler whose every formatted line has the given secrets replaced by ``***``
    (also as they appear inside a ``bytes`` repr, e.g. a logged SASL token). Without an explicit
    ``stream`` it writes to whatever ``sys.stderr`` is at the time of each record (so a replaced or
    redirected stderr is followed, and a closed earlier one is never written to)."""

    def __init__(self, stream=None, secrets: tuple[str, ...] | list[str] = ()):
        super().__init__(stream)
        self.follow_stderr = stream is None
        forms = set()
        for s in secrets:
            if s:
                forms.update({s, repr(s.encode())[2:-1], json.dumps(s)[1:-1]})
        self.secrets = sorted(forms, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for s in self.secrets:
            line = line.replace(s, REDACTED)
        return line

    def emit(self, record: logging.LogRecord) -> None:
        if self.follow_stderr:
            self.stream = sys.stderr  # under the handler's lock (Handler.handle)
        super().emit(record)


THIRD_PARTY = ("kafka",)
"""Library loggers that get the fusewatch handler too (same format, same redaction): WARNING and
above, everything at DEBUG."""


def setup_logging(
    level: str = "INFO",
    fmt: str = "text",
    stream=None,
    logger_names: tuple[str, ...] = (_ROOT,),
    secrets: tuple[str, ...] | list[str] = (),
) -> None:
    """Install one handler (text or JSON lines, ``secrets`` redacted) on the project's loggers;
    idempotent (replaces the handler it installed before, keeps everybody else's)."""
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    for name in logger_names:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if getattr(h, _HANDLER_TAG, False):
                lg.removeHandler(h)
        h = RedactingHandler(stream, secrets)
        setattr(h, _HANDLER_TAG, True)
        h.setFormatter(formatter)
        lg.addHandler(h)
        if name == _ROOT or name.startswith(_ROOT + "."):
            lg.setLevel(level.upper())
            lg.propagate = False
        else:  # a library: its WARNINGs (all of it at DEBUG) in our format; its own levels, propagation kept
            h.setLevel("DEBUG" if level.upper() == "DEBUG" else "WARNING")
            if level.upper() == "DEBUG":
                lg.setLevel("DEBUG")


def setup_from_config(cfg, stream=None) -> None:
    """:func:`setup_logging` from ``cfg.log_level``, ``cfg.effective_log_format`` (``log_format``,
    or the older ``worker.log_format`` when set) and ``cfg.secrets()``."""
    setup_logging(
        cfg.log_level,
        cfg.effective_log_format,
        stream=stream,
        logger_names=(_ROOT, *THIRD_PARTY),
        secrets=cfg.secrets(),
    )
