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
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from fusewatch.sinks.base import Sink, SinkUnavailable
from fusewatch.stream.alert_schema import AlertMessage

log = logging.getLogger("fusewatch.sinks.webhook")
SIGNATURE_HEADER = "X-Fusewatch-Signature"
TIMESTAMP_HEADER = "X-Fusewatch-Timestamp"
RETRYABLE = {408, 425, 429}


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
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
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
    def __init__(self, url: str, wcfg, dead_letters: DeadLetterFile, stop: threading.Event | None = None):
        self.url = url
        self.cfg = wcfg
        self.name = f"webhook {url}"
        self.dead_letters = dead_letters
        self._stop = stop or threading.Event()
        self.attempts = 0
        self.dead_lettered = 0

    def _post(self, alert: AlertMessage, body: bytes) -> tuple[int | None, str, float | None]:
        """One attempt: (HTTP status or None, error text, Retry-After seconds or None)."""
        ts = str(int(time.time()))
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "fusewatch-notify",
                "X-Fusewatch-Alert-Id": alert.id,
                "X-Fusewatch-Event": alert.event_key,
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign(self.cfg.secret_value(), ts, body),
            },
        )
        self.attempts += 1
        try:
            with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                resp.read(65536)
                return resp.status, "", None
        except urllib.error.HTTPError as e:
            ra = e.headers.get("Retry-After") if e.headers else None
            try:
                retry_after = float(ra) if ra is not None else None
            except ValueError:
                retry_after = None
            return e.code, f"HTTP {e.code} {e.reason}", retry_after
        except (urllib.error.URLError, OSError, ValueError) as e:
            return None, f"{type(e).__name__}: {getattr(e, 'reason', e)}", None

    def deliver(self, alert: AlertMessage, record: bytes) -> None:
        tries = 1 + self.cfg.retries
        delay = self.cfg.backoff_initial
        error = ""
        for attempt in range(1, tries + 1):
            if self._stop.is_set():
                raise SinkUnavailable(f"{self.name}: stopping")
            status, error, retry_after = self._post(alert, record)
            if status is not None and 200 <= status < 300:
                return
            if status is not None and 400 <= status < 500 and status not in RETRYABLE:
                break  # the receiver rejects it: retrying will not help
            if attempt < tries:
                wait = min(self.cfg.backoff_max, delay * random.uniform(0.8, 1.2))
                if retry_after is not None:
                    wait = min(self.cfg.backoff_max, max(wait, retry_after))
                log.warning(
                    "webhook %s: %s for %s (attempt %d/%d); retrying in %.1f s",
                    self.url,
                    error,
                    alert.event_key,
                    attempt,
                    tries,
                    wait,
                )
                if self._stop.wait(wait):
                    raise SinkUnavailable(f"{self.name}: stopping")
                delay = min(self.cfg.backoff_max, delay * 2)
        self.dead_letters.write(
            {
                "url": self.url,
                "event": alert.event_key,
                "id": alert.id,
                "camera": alert.camera,
                "error": error,
                "attempts": attempt,
                "failed_at": time.time(),
                "record": json.loads(record),
            }
        )
        self.dead_lettered += 1
        log.error(
            "webhook %s: gave up on %s after %d attempt(s) (%s); written to %s",
            self.url,
            alert.event_key,
            attempt,
            error,
            self.dead_letters.path,
        )
