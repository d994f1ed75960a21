"""Real media servers for network tests: MediaMTX (RTSP) fed by an ffmpeg publisher, and an ffmpeg
``-listen 1`` HTTP MPEG-TS server.

MediaMTX is found at ``$FUSEWATCH_MEDIAMTX``, ``$FUSEWATCH_CACHE/bin/mediamtx``
(``~/.cache/fusewatch/bin``) or on PATH; otherwise built with Go: first
``go install github.com/bluenviron/mediamtx@latest``; if the module proxy refuses that, the pinned
module version :data:`MEDIAMTX_PINNED` is fetched with ``go mod download`` and built with
``go build`` (its ``go generate`` outputs — version file, bundled hls.js — are replaced by stubs:
the tests use RTSP only). Pre-build from a shell: ``python tests/media_servers.py --ensure``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CACHE = Path(os.environ.get("FUSEWATCH_CACHE", Path.home() / ".cache" / "fusewatch"))
BIN_DIR = CACHE / "bin"
MEDIAMTX_MODULE = "github.com/bluenviron/mediamtx"
MEDIAMTX_PINNED = "v1.12.3"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


class MediaServerUnavailable(RuntimeError):
    """A server binary cannot be found or built; ``str()`` says why (used as the skip reason)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def find_mediamtx() -> Path | None:
    env = os.environ.get("FUSEWATCH_MEDIAMTX")
    for cand in ([Path(env)] if env else []) + [BIN_DIR / "mediamtx"]:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    w = shutil.which("mediamtx")
    return Path(w) if w else None


def _go_env() -> dict:
    env = dict(os.environ)
    env["GOBIN"] = str(BIN_DIR)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def build_mediamtx(timeout: float = 1200.0, log=None) -> Path:
    """Build MediaMTX into :data:`BIN_DIR` with the Go toolchain (see module doc)."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if not go:
        raise MediaServerUnavailable("mediamtx not found and no Go toolchain to build it")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    env = _go_env()
    out = lambda *a: log(*a) if log else None  # noqa: E731
    r = subprocess.run(
        [go, "install", f"{MEDIAMTX_MODULE}@latest"], env=env, capture_output=True, text=True, timeout=timeout
    )
    if r.returncode == 0 and (BIN_DIR / "mediamtx").exists():
        return BIN_DIR / "mediamtx"
    out("go install @latest failed:", r.stderr.strip().splitlines()[-1:] or r.returncode)
    r = subprocess.run(
        [go, "mod", "download", "-json", f"{MEDIAMTX_MODULE}@{MEDIAMTX_PINNED}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise MediaServerUnavailable(
            f"cannot fetch {MEDIAMTX_MODULE}@{MEDIAMTX_PINNED} from the Go module "
            f"proxy: {(r.stderr or r.stdout).strip()[-300:]}"
        )
    src_dir = Path(json.loads(r.stdout)["Dir"])
    with tempfile.TemporaryDirectory(prefix="mediamtx-src-") as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(src_dir, src)
        for p in src.rglob("*"):
            try:
                p.chmod(p.stat().st_mode | 0o200)
            except OSError:
                pass
        # outputs of `go generate` (they download files): stubs are enough for an RTSP server
        (src / "internal/core/VERSION").write_text(MEDIAMTX_PINNED)
        hls = src / "internal/servers/hls/hls.min.js"
        if not hls.exists():
            hls.write_text("/* hls.js not bundled in this test build */\n")
        r = subprocess.run(
            [go, "build", "-o", str(BIN_DIR / "mediamtx"), "."],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise MediaServerUnavailable(
                f"go build of mediamtx {MEDIAMTX_PINNED} failed: {(r.stderr or r.stdout).strip()[-300:]}"
            )
    return BIN_DIR / "mediamtx"


def ensure_mediamtx(log=None) -> Path:
    return find_mediamtx() or build_mediamtx(log=log)


def _terminate(p: subprocess.Popen | None, kill: bool = False, timeout: float = 5.0) -> None:
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(timeout)
    except ProcessLookupError:
        pass


class MediaMTX:
    """A MediaMTX RTSP server on 127.0.0.1:``port`` (TCP only; everything else disabled)."""

    def __init__(self, binary: Path, port: int | None = None, workdir: Path | None = None):
        self.binary = Path(binary)
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mediamtx-"))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mediamtx.log"

    def url(self, path: str = "cam") -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def start(self, timeout: float = 10.0) -> MediaMTX:
        conf = self.workdir / "mediamtx.yml"
        conf.write_text(
            "logLevel: info\n"
            f"rtspAddress: 127.0.0.1:{self.port}\n"
            "rtspTransports: [tcp]\n"
            "rtmp: no\nhls: no\nwebrtc: no\nsrt: no\napi: no\nmetrics: no\npprof: no\nplayback: no\n"
            "paths:\n  all_others:\n"
        )
        self.proc = subprocess.Popen(
            [str(self.binary), str(conf)], cwd=self.workdir, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT
        )
        if not wait_port(self.port, timeout):
            self.stop(kill=True)
            raise MediaServerUnavailable(f"mediamtx did not listen on {self.port}: {self.log_tail()}")
        return self

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, kill: bool = False) -> None:
        _terminate(self.proc, kill=kill)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FFmpegPublisher:
    """``ffmpeg -re -stream_loop -1 -i FILE -c copy -f rtsp URL`` (a camera pushing to MediaMTX)."""

    def __init__(self, file: str | Path, url: str, log_path: Path | None = None):
        self.file, self.url = str(file), url
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="ffpub-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self) -> FFmpegPublisher:
        self.proc = subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "warning",
                "-re",
                "-stream_loop",
                "-1",
                "-i",
                self.file,
                "-c",
                "copy",
                "-f",
                "rtsp",
                "-rtsp_transport",
                "tcp",
                self.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        _terminate(self.proc, kill=kill)
        self.proc = None


class FFmpegHTTPServer:
    """``ffmpeg -re -i FILE -c copy -f mpegts -listen 1 http://127.0.0.1:PORT/`` (one client)."""

    def __init__(self, file: str | Path, port: int | None = None, loop: bool = False):
        self.file = str(file)
        self.port = port or free_port()
        self.loop = loop
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="ffhttp-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> FFmpegHTTPServer:
        loop = ["-stream_loop", "-1"] if self.loop else []
        self.proc = subprocess.Popen(
            [
                FFMPEG,
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "warning",
                "-re",
                *loop,
                "-i",
                self.file,
                "-c",
                "copy",
                "-f",
                "mpegts",
                "-listen",
                "1",
                self.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "ab"),
        )
        return self

    def stop(self, kill: bool = False) -> None:
        _terminate(self.proc, kill=kill)
        self.proc = None


if __name__ == "__main__":
    if "--ensure" in sys.argv:
        print(ensure_mediamtx(log=lambda *a: print(*a, file=sys.stderr)))
    else:
        print(find_mediamtx() or "mediamtx not found (run with --ensure to build it)")
