"""Sink interface (see :mod:`fusewatch.sinks`)."""

from __future__ import annotations

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
