"""The exception tree of fusewatch: every user-facing failure is a :class:`FusewatchError`.

``str(err)`` is one line that says what is wrong and names the field, file, flag or address
involved; the CLI prints ``fusewatch: error: <str(err)>`` and exits with status 2 (``--debug``
shows the traceback). Anything that is not a :class:`FusewatchError` is a bug and propagates
with its traceback.

Each class also derives from the built-in exception it replaced (``ValueError``,
``RuntimeError``, ...) so ``except ValueError`` written before this tree existed still works.
The classes are re-exported where they used to live (``fusewatch.stream.config.ConfigError``,
``fusewatch.stream.transport.base.TransportError``, ``fusewatch.stream.schema.SchemaError``, ...).

This module imports nothing from fusewatch: both the camera side (``fusewatch.stream``) and the
engines (``fusewatch.engines``) may import it.
"""

from __future__ import annotations


class FusewatchError(Exception):
    """Root of every user-facing fusewatch error (one line, printed by the CLI, exit 2)."""


class UsageError(FusewatchError, ValueError):
    """A command-line flag or argument combination that cannot work (names the flag)."""


class ConfigError(FusewatchError, ValueError):
    """An invalid configuration value, file or variable; ``str(err)`` starts with the field name."""


class SchemaError(FusewatchError, ValueError):
    """A message that violates the wire contract. ``reason`` is a stable code, e.g. ``bad_dtype``
    (the dead-letter contract: the code lands in the ``reason`` header)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TransportError(FusewatchError, RuntimeError):
    """A transport-level failure the caller must surface (broker unreachable, delivery failed, auth)."""


class DeliveryError(TransportError):
    """One or more produced records were not acknowledged by the broker."""


class AuthenticationError(TransportError):
    """The broker rejected our credentials (SASL) or the TLS handshake."""


class CommitFailedError(TransportError):
    """An offset commit was rejected (typically: the group rebalanced meanwhile)."""


class BrokerError(TransportError):
    """The local broker could not be fetched, started, stopped or queried."""


class SourceError(FusewatchError, RuntimeError):
    """A user-facing source failure (unsupported URI, missing or unreadable file, no video stream,
    gave up reconnecting)."""


class BackendError(FusewatchError, RuntimeError):
    """A scoring backend cannot be used (missing GPU/library, wrong model form, bad inputs)."""


class CheckpointError(FusewatchError, ValueError):
    """A model file (``.pt`` checkpoint or exported ``.onnx``) that is missing, not a file, or not a
    valid fusewatch model (``str()`` names the path)."""


class DatasetError(FusewatchError, ValueError):
    """Feature data, labels or videos that cannot be used for training/evaluation (names the path)."""


class DataNotFoundError(DatasetError, FileNotFoundError):
    """A data/label/video file or folder that does not exist (also a ``FileNotFoundError``)."""


class MissingExtraError(FusewatchError, ImportError):
    """An optional dependency is not installed; ``str(err)`` is one line naming the extra to install
    (``pip install 'fusewatch[train]'`` …)."""


class ExportError(FusewatchError, RuntimeError):
    """A model that cannot be exported, or an output location that cannot be written."""


def one_line(err: BaseException) -> str:
    """First non-empty line of ``str(err)``, or the class name when the message is empty."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__
