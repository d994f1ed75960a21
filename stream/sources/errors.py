"""The one error type of the source package (defined under the common root, :mod:`fusewatch.errors`)."""

from __future__ import annotations

from fusewatch.errors import SourceError

__all__ = ["SourceError"]
