"""Pre-flight broker check over the raw Kafka protocol (non-flexible request versions).

Start-up is bounded by ``cfg.kafka.connect_timeout_s``: :func:`check_broker` connects, performs the
TLS handshake / SASL PLAIN authentication and a metadata request itself, so an unreachable broker or
wrong credentials surface as a one-line :class:`TransportError` instead of kafka-python's silent
retry loop.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from fusewatch.stream.config import Config
from fusewatch.stream.transport.base import TransportError

from .client_config import AuthenticationError, _describe

_API_METADATA, _API_SASL_HANDSHAKE, _API_API_VERSIONS, _API_SASL_AUTH = 3, 17, 18, 36


class _Closed(OSError):
    pass


def _kreq(sock: socket.socket, api: int, ver: int, corr: int, body: bytes) -> bytes:
    cid = b"fusewatch-preflight"
    msg = struct.pack(">hhih", api, ver, corr, len(cid)) + cid + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv(sock, 4))[0]
    resp = _recv(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise OSError("correlation id mismatch")
    return resp[4:]


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise _Closed("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def _kstr(b: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", b, pos)
    if n < 0:
        return None, pos + 2
    return b[pos + 2 : pos + 2 + n].decode("utf-8", "replace"), pos + 2 + n


def _split_server(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _ssl_context(cfg: Config) -> ssl.SSLContext:
    k = cfg.kafka
    ctx = ssl.create_default_context(cafile=k.ssl_cafile)
    if k.ssl_certfile:
        ctx.load_cert_chain(k.ssl_certfile, k.ssl_keyfile)
    return ctx


def _preflight_one(cfg: Config, host: str, port: int, timeout: float) -> None:
    """Connect, (TLS), (SASL PLAIN), metadata. Raises OSError (retryable) or TransportError (fatal)."""
    k = cfg.kafka
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        if k.security_protocol in ("SSL", "SASL_SSL"):
            try:
                ctx = _ssl_context(cfg)
            except (OSError, ValueError) as e:
                raise TransportError(f"Kafka TLS settings (ssl_cafile/ssl_certfile/ssl_keyfile): {e}") from None
            try:
                sock = ctx.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError) as e:
                raise AuthenticationError(f"Kafka TLS handshake with {host}:{port} failed: {e}") from None
        if k.security_protocol.startswith("SASL"):
            mech = (k.sasl_mechanism or "PLAIN").encode()
            try:
                r = _kreq(sock, _API_SASL_HANDSHAKE, 1, 1, struct.pack(">h", len(mech)) + mech)
            except _Closed:
                raise AuthenticationError(
                    f"Kafka broker {host}:{port} closed the connection at the SASL handshake: "
                    f"is this a SASL listener? (security_protocol={k.security_protocol})"
                ) from None
            err = struct.unpack_from(">h", r)[0]
            if err and err != 33:  # 33: UNSUPPORTED_SASL_MECHANISM, handled below
                raise AuthenticationError(
                    f"Kafka SASL handshake rejected by {host}:{port} (error code {err}): is this a "
                    f"SASL listener? (security_protocol={k.security_protocol})"
                )
            if err:
                (n,) = struct.unpack_from(">i", r, 2)
                pos, enabled = 6, []
                for _ in range(max(n, 0)):
                    s, pos = _kstr(r, pos)
                    enabled.append(s)
                raise AuthenticationError(
                    f"Kafka authentication failed: SASL mechanism {mech.decode()} is not enabled on "
                    f"{host}:{port} (enabled: {', '.join(map(str, enabled)) or 'none'})"
                )
            if mech == b"PLAIN":
                tok = (
                    b"\0"
                    + (k.sasl_plain_username or "").encode()
                    + b"\0"
                    + (k.sasl_plain_password.get_secret_value() if k.sasl_plain_password else "").encode()
                )
                try:
                    r = _kreq(sock, _API_SASL_AUTH, 1, 2, struct.pack(">i", len(tok)) + tok)
                except _Closed:
                    raise AuthenticationError(
                        f"Kafka authentication failed for user {k.sasl_plain_username!r} at "
                        f"{host}:{port} (connection closed during SASL/PLAIN)"
                    ) from None
                err = struct.unpack_from(">h", r)[0]
                if err:
                    msg, _ = _kstr(r, 2)
                    raise AuthenticationError(
                        f"Kafka authentication failed for user {k.sasl_plain_username!r} at "
                        f"{host}:{port}: {msg or 'SASL/PLAIN rejected'}"
                    )
            else:
                return  # SCRAM/OAUTHBEARER/GSSAPI: kafka-python completes the exchange itself
        # Metadata v4 with no topics: proves the listener speaks our protocol and a broker is up.
        try:
            r = _kreq(sock, _API_METADATA, 4, 3, struct.pack(">i?", 0, False))
        except _Closed:
            raise AuthenticationError(
                f"Kafka broker {host}:{port} closed the connection on a metadata request: does the "
                f"listener expect another security protocol? (client uses {k.security_protocol})"
            ) from None
        if struct.unpack_from(">i", r, 4)[0] <= 0:
            raise OSError("no broker registered yet")
    finally:
        sock.close()


def check_broker(cfg: Config, timeout: float | None = None) -> None:
    """Wait (up to ``timeout``, default ``cfg.kafka.connect_timeout_s``) until one bootstrap server
    answers; raise :class:`TransportError` (unreachable) or :class:`AuthenticationError` (wrong
    credentials / TLS / protocol mismatch, raised at once) with a one-line message."""
    timeout = cfg.kafka.connect_timeout_s if timeout is None else timeout
    servers = cfg.kafka.client_kwargs()["bootstrap_servers"]
    deadline = time.monotonic() + timeout
    delay, why = 0.1, "no attempt"
    while True:
        for s in servers:
            left = deadline - time.monotonic()
            try:
                host, port = _split_server(s)
                _preflight_one(cfg, host, port, max(0.2, min(left, 5.0)))
                return
            except TransportError:
                raise
            except ValueError:
                raise TransportError(f"kafka.bootstrap_servers: bad address {s!r} (want host:port)") from None
            except (OSError, struct.error) as e:
                why = f"{s}: {e.strerror or e}" if isinstance(e, OSError) and e.strerror else f"{s}: {e}"
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(f"Kafka broker unreachable at {_describe(cfg)} after {timeout:g}s (last error: {why})")
        time.sleep(min(delay, left))
        delay = min(delay * 2, 1.0)
