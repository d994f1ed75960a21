"""Sink interface (see :mod:`fusewatch.sinks`) and per-record failure bookkeeping.

A consumer of the alerts topic must survive any one record: whatever exception decoding, encoding,
formatting or handing over a single record raises is caught, counted by reason
(:func:`failure_reason`) and logged once per reason (:class:`ReasonLog`), and the record is skipped
(or dead-lettered where the component has a dead-letter path) — processing goes on.
"""

from __future__ import annotations

import logging

from fusewatch.errors import SchemaError
from fusewatch.stream.alert_schema import AlertMessage


class SinkUnavailable(RuntimeError):
    """The sink could not take the alert now (broker down, shutting down); retry later."""


class Sink:
    """Base class: ``name`` identifies the sink in logs and partial-delivery bookkeeping."""

    name: str = "sink"

    def deliver(self, alert: AlertMessage, record: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def failure_reason(e: BaseException) -> str:
    """A short, stable reason for a per-record failure: the :class:`SchemaError` reason code
    (``undecodable``, ``bad_field``, …) or else the exception's type name (``OverflowError``)."""
    reason = getattr(e, "reason", None) if isinstance(e, SchemaError) else None
    return reason if isinstance(reason, str) and reason else type(e).__name__


def safe_text(s: object, limit: int = 300) -> str:
    """``s`` as printable one-line text for logs: lone surrogates and other unencodable characters
    replaced, control characters escaped, cut to ``limit`` characters."""
    try:
        text = str(s)
    except Exception as e:  # noqa: BLE001 - a broken __str__ must not break the log line
        text = f"<unprintable {type(e).__name__}>"
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[: limit * 2])
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ReasonLog:
    """Counts per-record failures by reason; the first failure of each reason is logged at
    ``level``, later ones of the same reason only at DEBUG (a flood of bad records cannot flood the
    log). ``counts`` maps reason → number of records."""

    def __init__(self, logger: logging.Logger, level: int = logging.WARNING):
        self.log = logger
        self.level = level
        self.counts: dict[str, int] = {}

    def note(self, e: BaseException, what: str) -> str:
        """Count ``e`` (raised while handling the record described by ``what``) and log it; returns
        its reason."""
        reason = failure_reason(e)
        text = safe_text(e) if isinstance(e, SchemaError) else f"{reason}: {safe_text(e)}"
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        level = self.level if n == 1 else logging.DEBUG
        if self.log.isEnabledFor(level):
            more = " (further records with this reason are logged at DEBUG)" if n == 1 else ""
            self.log.log(level, "%s: %s%s", what, text, more)
        return reason
