#!/usr/bin/env python3
"""Readiness probe for the local broker (stdlib only): ``probe.py HOST:PORT [TIMEOUT_S] [MIN_BROKERS]``.

Exit 0 when the broker accepts a TCP connection, answers ApiVersions and a Metadata request that
lists at least MIN_BROKERS (default 1) unfenced brokers; exit 1 otherwise. Prints a one-line reason on failure.
"""

from __future__ import annotations

import socket
import struct
import sys

API_VERSIONS, METADATA = 18, 3


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client = b"fusewatch-probe"
    hdr = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    msg = hdr + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _read(sock, 4))[0]
    resp = _read(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise OSError("correlation id mismatch")
    return resp[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed by broker")
        buf += chunk
    return buf


def probe(host: str, port: int, timeout: float = 3.0, min_brokers: int = 1) -> str | None:
    """None when ready, else a short reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            r = _request(s, API_VERSIONS, 0, 1, b"")
            err, n = struct.unpack(">hi", r[:6])
            if err:
                return f"ApiVersions error {err}"
            ranges = {}
            for i in range(n):
                k, lo, hi = struct.unpack(">hhh", r[6 + 6 * i : 12 + 6 * i])
                ranges[k] = (lo, hi)
            lo, hi = ranges.get(METADATA, (0, -1))
            ver = next((v for v in (8, 7, 6, 5, 4) if lo <= v <= hi), None)
            if ver is None:
                return None  # answers the protocol; no non-flexible Metadata version to parse
            # topics: empty array (brokers only); allow_auto_topic_creation; v8: 2 include_* bools
            body = struct.pack(">i?", 0, False) + (struct.pack(">??", False, False) if ver >= 8 else b"")
            r = _request(s, METADATA, ver, 2, body)
            nbrokers = struct.unpack(">i", r[4:8])[0]  # after throttle_time_ms
            if nbrokers < max(1, min_brokers):
                return (
                    f"{nbrokers} broker(s) registered (want {max(1, min_brokers)})"
                    if nbrokers
                    else "no broker registered yet"
                )
            return None
    except (OSError, struct.error) as e:
        return f"{type(e).__name__}: {e}"


def main(argv: list[str]) -> int:
    host, _, port = argv[1].rpartition(":")
    timeout = float(argv[2]) if len(argv) > 2 else 3.0
    why = probe(host or "127.0.0.1", int(port), timeout, int(argv[3]) if len(argv) > 3 else 1)
    if why:
        print(f"not ready: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
