"""HTTP webhook sink: one signed JSON POST per alert, retries with backoff, then a dead-letter file.

Request: ``POST <url>``, body = the version-2 alert record (exactly the bytes of the alerts topic's
format, UTF-8 JSON), headers::

    Content-Type: application/json
    X-Fusewatch-Alert-Id: <id>
    X-Fusewatch-Event: <id>:<type>:<end_clip>          (deduplication key; redeliveries repeat it)
    X-Fusewatch-Timestamp: <Unix seconds of this attempt>
    X-Fusewatch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver verifies with :func:`verify_signature` (or the same three lines in any language): recompute
the HMAC over the timestamp header, a dot and the raw body, compare in constant time, and reject
timestamps older than a few minutes (replays). 2xx = delivered. Connection errors, timeouts, 408,
429 and 5xx are retried ``webhook.retries`` times with exponential, jittered backoff
(``backoff_initial`` doubling up to ``backoff_max``; a ``Retry-After`` in seconds is honoured up to
``backoff_max``); other 4xx are not retried. After the last attempt the record goes to the
dead-letter file (JSON lines, fsynced) — only then does the alert count as handled.

Header values built from alert fields are percent-encoded (:func:`header_value`: UTF-8, every
character outside printable ASCII and ``%`` itself), so an id with CR/LF or non-Latin-1 text can
neither inject headers nor fail the request; ordinary ids (``[A-Za-z0-9._-]``) are sent unchanged,
and the body always carries the exact id. A request that cannot be built or sent for a reason
retrying cannot fix (invalid URL or header, any unexpected error) is not retried: the alert goes to
the dead-letter file at once, with the reason. Failing to write the dead-letter file raises
:class:`~fusewatch.sinks.SinkUnavailable` (nothing handed over: the notifier offers it again later).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from fusewatch.sinks.base import Sink, SinkUnavailable, safe_text
from fusewatch.stream.alert_schema import AlertMessage

log = logging.getLogger("fusewatch.sinks.webhook")
SIGNATURE_HEADER = "X-Fusewatch-Signature"
TIMESTAMP_HEADER = "X-Fusewatch-Timestamp"
RETRYABLE = {408, 425, 429}
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%") + " "


def header_value(value: object) -> str:
    """``value`` as a safe HTTP header value: percent-encoded UTF-8 for every character outside
    printable ASCII (CR, LF, control characters, non-ASCII; lone surrogates too) and for ``%``;
    ``urllib.parse.unquote`` restores it. Printable-ASCII values without ``%`` are unchanged."""
    return quote(str(value), safe=_HEADER_SAFE, encoding="utf-8", errors="surrogatepass")


class Attempt(NamedTuple):
    """Outcome of one POST: HTTP status (None: no response), error text, Retry-After seconds, and
    whether another attempt could succeed (False: the request itself is bad)."""

    status: int | None
    error: str
    retry_after: float | None = None
    retryable: bool = True


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``secret`` over ``b"<timestamp>." + body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    max_age_s: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """Receiver side: is ``signature`` valid for ``body`` and ``timestamp`` (and fresh enough)?"""
    try:
        ts = float(timestamp)
    except (TypeError, ValueError):
        return False
    if max_age_s is not None and abs((time.time() if now is None else now) - ts) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature or "")


class DeadLetterFile:
    """Append-only JSON lines, one per alert given up on; each line is fsynced before returning."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(os.path.expanduser(str(path)))
        self._lock = threading.Lock()

    def write(self, entry: dict) -> None:
        """Append ``entry`` as one JSON line (non-encodable text, e.g. lone surrogates, is escaped)."""
        try:
            line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: \uXXXX escapes are still valid JSON
            line = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(x) for x in self.path.read_text(encoding="utf-8").splitlines() if x.strip()]


class WebhookSink(Sink):
    """POSTs each alert to ``url`` (see the module doc); ``attempts`` and ``dead_lettered`` count."""

    def __init__(self, url: str, wcfg, dead_letters: DeadLetterFile, stop: threading.Event | None = None):
        self.url = url
        self.cfg = wcfg
        self.name = f"webhook {url}"
        self.dead_letters = dead_letters
        self._stop = stop or threading.Event()
        self.attempts = 0
        self.dead_lettered = 0

    def _request(self, alert: AlertMessage, body: bytes) -> urllib.request.Request:
        ts = str(int(time.time()))
        return urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "fusewatch-notify",
                "X-Fusewatch-Alert-Id": header_value(alert.id),
                "X-Fusewatch-Event": header_value(alert.event_key),
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self.cfg.secret_value(), ts, body),
            },
        )

    def _post(self, alert: AlertMessage, body: bytes) -> Attempt:
        """One attempt (see :class:`Attempt`)."""
        self.attempts += 1
        try:
            req = self._request(alert, body)
        except Exception as e:  # noqa: BLE001 - the same alert would fail the same way again
            return Attempt(None, f"cannot build the request: {type(e).__name__}: {e}", retryable=False)
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                resp.read(65536)
                return Attempt(resp.status, "")
        except urllib.error.HTTPError as e:
            ra = e.headers.get("Retry-After") if e.headers else None
            try:
                retry_after = float(ra) if ra is not None else None
            except ValueError:
                retry_after = None
            return Attempt(e.code, f"HTTP {e.code} {e.reason}", retry_after)
        except http.client.InvalidURL as e:  # the configured URL (or its path) cannot be requested
            return Attempt(None, f"invalid request: {type(e).__name__}: {e}", retryable=False)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # network, receiver
            return Attempt(None, f"{type(e).__name__}: {getattr(e, 'reason', e)}")
        except Exception as e:  # noqa: BLE001 - ValueError etc.: the request is invalid, not the network
            return Attempt(None, f"invalid request: {type(e).__name__}: {e}", retryable=False)

    def deliver(self, alert: AlertMessage, record: bytes) -> None:
        """POST ``alert`` until accepted; give up to the dead-letter file (see the module doc)."""
        tries = 1 + self.cfg.retries
        delay = self.cfg.backoff_initial
        error = ""
        for attempt in range(1, tries + 1):
            if self._stop.is_set():
                raise SinkUnavailable(f"{self.name}: stopping")
            status, error, retry_after, retryable = self._post(alert, record)
            if status is not None and 200 <= status < 300:
                return
            if not retryable or (status is not None and 400 <= status < 500 and status not in RETRYABLE):
                break  # the request or the receiver rejects it: retrying will not help
            if attempt < tries:
                wait = min(self.cfg.backoff_max, delay * random.uniform(0.8, 1.2))
                if retry_after is not None:
                    wait = min(self.cfg.backoff_max, max(wait, retry_after))
                log.warning(
                    "webhook %s: %s for %s (attempt %d/%d); retrying in %.1f s",
                    self.url,
                    safe_text(error),
                    safe_text(alert.event_key, 200),
                    attempt,
                    tries,
                    wait,
                )
                if self._stop.wait(wait):
                    raise SinkUnavailable(f"{self.name}: stopping")
                delay = min(self.cfg.backoff_max, delay * 2)
        self._dead_letter(alert, record, safe_text(error, 1000), attempt)

    def _dead_letter(self, alert: AlertMessage, record: bytes, error: str, attempts: int) -> None:
        try:
            rec: object = json.loads(record)
        except Exception:  # noqa: BLE001 - keep the raw text rather than lose the entry
            rec = bytes(record).decode("utf-8", "replace")
        try:
            self.dead_letters.write(
                {
                    "url": self.url,
                    "event": alert.event_key,
                    "id": alert.id,
                    "camera": alert.camera,
                    "error": error,
                    "attempts": attempts,
                    "failed_at": time.time(),
                    "record": rec,
                }
            )
        except OSError as e:  # disk full, permissions: not handed over, offer it again later
            raise SinkUnavailable(
                f"{self.name}: cannot write the dead-letter file {self.dead_letters.path}: {e}"
            ) from e
        self.dead_lettered += 1
        log.error(
            "webhook %s: gave up on %s after %d attempt(s) (%s); written to %s",
            self.url,
            safe_text(alert.event_key, 200),
            attempts,
            error,
            self.dead_letters.path,
        )
