"""The one error type of the source package."""
from __future__ import annotations


class SourceError(RuntimeError):
    """A user-facing source failure; ``str(err)`` is one line (unsupported URI, missing or
    unreadable file, no video stream, gave up reconnecting)."""
