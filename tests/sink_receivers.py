"""Real receivers for the sink tests: an HTTP webhook receiver (stdlib server on a free loopback
port) that fails the first attempts, and a Mosquitto broker process started from its Debian binary."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fusewatch.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature


class WebhookReceiver:
    """Answers ``fail_status`` to the first ``fail_first`` POSTs of every event, then 200 (or always
    ``fail_status`` with ``fail_first=None``); records every request with its signature verdict."""

    def __init__(self, secret: str, fail_first: int | None = 0, fail_status: int = 503):
        self.secret, self.fail_first, self.fail_status = secret, fail_first, fail_status
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ev = self.headers.get("X-Fusewatch-Event")
                ok = verify_signature(
                    outer.secret, self.headers.get(TIMESTAMP_HEADER), body, self.headers.get(SIGNATURE_HEADER)
                )
                with outer.lock:
                    n = sum(1 for r in outer.requests if r["event"] == ev)
                    fail = outer.fail_first is None or n < outer.fail_first
                    outer.requests.append(
                        {
                            "event": ev,
                            "body": body,
                            "signature_ok": ok,
                            "failed": fail,
                            "content_type": self.headers.get("Content-Type"),
                        }
                    )
                self.send_response(outer.fail_status if fail else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> dict[str, dict]:
        """Event key → decoded body of its successful requests (the receiver's dedup view)."""
        with self.lock:
            return {r["event"]: json.loads(r["body"]) for r in self.requests if not r["failed"]}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Mosquitto:
    """``mosquitto -c <conf>`` on a free loopback port, persistence in ``workdir`` (so a graceful
    restart keeps queued QoS 1 messages of persistent subscribers)."""

    def __init__(self, workdir: Path):
        self.bin = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.dir}/\nlog_dest file {self.dir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.bin, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"mosquitto exited with {self.proc.returncode}: "
                        f"{(self.dir / 'mosquitto.log').read_text()[-500:]}"
                    ) from None
                time.sleep(0.1)
        raise RuntimeError("mosquitto did not listen within 15 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful: saves the persistence file
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
