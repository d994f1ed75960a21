"""Local single-node Apache Kafka (KRaft) for development, CI and fault tests.

Python wrappers around ``deploy/kafka/{fetch,up,down,status}.sh`` (which fetch Kafka 4.x from
Maven Central once into ``~/.cache/fusewatch/kafka/<version>/libs`` and run the broker from
``~/.cache/fusewatch/kafka/run``), plus the ``fusewatch kafka up|down|status|restart`` and
``fusewatch topics create`` subcommands.

Listeners: PLAINTEXT ``127.0.0.1:9092``, SASL_PLAINTEXT/PLAIN ``127.0.0.1:9094`` (user
``fusewatch`` / ``fusewatch-secret``), KRaft controller ``127.0.0.1:9093``. Knobs are the
``LOCALKAFKA_*`` environment variables documented in ``deploy/kafka/common.sh``; the keyword
arguments below set them for one call.
"""

from __future__ import annotations

import os
import signal as _signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def _deploy_dir() -> Path:
    """``deploy/kafka`` of the source tree, or the copy shipped as package data (``fusewatch.deploy``)."""
    from importlib.resources import files

    return Path(str(files("fusewatch.deploy"))) / "kafka"


DEPLOY_DIR = _deploy_dir()
DEFAULT_PORT, DEFAULT_SASL_PORT, DEFAULT_CONTROLLER_PORT = 9092, 9094, 9093
SASL_USER, SASL_PASSWORD = "fusewatch", "fusewatch-secret"
"""Credentials of the local broker's SASL/PLAIN listener (test-only; override with LOCALKAFKA_SASL_*)."""


from fusewatch.errors import BrokerError  # noqa: E402,F401 - re-exported


@dataclass
class BrokerStatus:
    running: bool
    bootstrap: str
    pid: int | None = None
    sasl_bootstrap: str | None = None
    ready: bool = False

    def __str__(self) -> str:
        if not self.running:
            return f"stopped ({self.bootstrap})"
        return (
            f"running pid {self.pid} bootstrap {self.bootstrap} sasl {self.sasl_bootstrap} "
            f"{'ready' if self.ready else 'NOT answering'}"
        )


def _env(
    port: int | None = None,
    sasl_port: int | None = None,
    controller_port: int | None = None,
    home: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    version: str | None = None,
    heap: str | None = None,
    host: str | None = None,
) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHON", sys.executable)
    for name, val in (
        ("PORT", port),
        ("SASL_PORT", sasl_port),
        ("CONTROLLER_PORT", controller_port),
        ("HOME", home),
        ("RUN_DIR", run_dir),
        ("VERSION", version),
        ("HEAP", heap),
        ("HOST", host),
    ):
        if val is not None:
            env[f"LOCALKAFKA_{name}"] = str(val)
    return env


def _run(
    script: str, args: list[str], env: dict[str, str], timeout: float, quiet: bool, ok_codes: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess:
    cmd = ["bash", str(DEPLOY_DIR / script), *args]
    try:
        cp = subprocess.run(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if quiet else None,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BrokerError(f"kafka {script}: timed out after {timeout:g}s") from None
    except FileNotFoundError as e:
        raise BrokerError(f"kafka {script}: {e}") from None
    if cp.returncode not in ok_codes:
        tail = (cp.stderr or "").strip().splitlines()[-1:] if quiet else []
        why = tail[0] if tail else f"exit status {cp.returncode}"
        raise BrokerError(f"kafka {script.removesuffix('.sh')}: {why.removeprefix('kafka: error: ')}")
    return cp


def kafka_fetch(
    *, version: str | None = None, home: str | os.PathLike | None = None, timeout: float = 900, quiet: bool = False
) -> Path:
    """Fetch the broker jars (cached); return the libs directory."""
    cp = _run("fetch.sh", [], _env(version=version, home=home), timeout, quiet)
    return Path(cp.stdout.strip().splitlines()[-1])


def kafka_up(
    port: int | None = None,
    sasl_port: int | None = None,
    controller_port: int | None = None,
    *,
    home: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    version: str | None = None,
    heap: str | None = None,
    timeout: float = 900,
    quiet: bool = False,
) -> str:
    """Start the local broker unless it runs already (then a no-op); wait until it answers
    metadata requests; return its PLAINTEXT bootstrap address ``host:port``."""
    env = _env(port, sasl_port, controller_port, home, run_dir, version, heap)
    cp = _run("up.sh", [], env, timeout, quiet)
    return cp.stdout.strip().splitlines()[-1]


def kafka_down(
    *,
    kill: bool = False,
    purge: bool = False,
    home: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    timeout: float = 120,
    quiet: bool = False,
) -> None:
    """Stop the local broker (SIGTERM, SIGKILL after LOCALKAFKA_STOP_TIMEOUT; ``kill``: SIGKILL at
    once). ``purge`` also deletes its data (topics, offsets). No-op when not running."""
    args = (["--kill"] if kill else []) + (["--purge"] if purge else [])
    _run("down.sh", args, _env(home=home, run_dir=run_dir), timeout, quiet)


def kafka_status(
    port: int | None = None,
    sasl_port: int | None = None,
    *,
    home: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    timeout: float = 30,
) -> BrokerStatus:
    """Whether the broker started by these scripts runs, and whether it answers."""
    cp = _run("status.sh", [], _env(port, sasl_port, home=home, run_dir=run_dir), timeout, True, ok_codes=(0, 3))
    fields = dict(kv.split("=", 1) for kv in cp.stdout.split()[1:] if "=" in kv)
    running = cp.stdout.startswith("running")
    return BrokerStatus(
        running=running,
        bootstrap=fields.get("bootstrap", ""),
        pid=int(fields["pid"]) if "pid" in fields else None,
        sasl_bootstrap=fields.get("sasl"),
        ready=fields.get("ready") == "yes",
    )


def kafka_restart(
    *,
    kill: bool = False,
    downtime: float = 0.0,
    port: int | None = None,
    sasl_port: int | None = None,
    controller_port: int | None = None,
    home: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    quiet: bool = True,
    timeout: float = 300,
) -> str:
    """Fault injection: stop the broker (SIGTERM, or SIGKILL with ``kill`` — a crash), wait
    ``downtime`` seconds, start it again on the same data; return the bootstrap address once it
    answers. Topics, records and committed offsets survive."""
    kafka_down(kill=kill, home=home, run_dir=run_dir, quiet=quiet)
    if downtime > 0:
        time.sleep(downtime)
    return kafka_up(port, sasl_port, controller_port, home=home, run_dir=run_dir, quiet=quiet, timeout=timeout)


def _signal_broker(sig: int, **kw) -> int:
    st = kafka_status(**kw)
    if not st.running or st.pid is None:
        raise BrokerError("kafka: broker is not running")
    os.kill(st.pid, sig)
    return st.pid


def kafka_pause(**kw) -> int:
    """Freeze the broker process (SIGSTOP): connections stay open but nothing answers. Returns pid."""
    return _signal_broker(_signal.SIGSTOP, **kw)


def kafka_resume(**kw) -> int:
    """Undo :func:`kafka_pause` (SIGCONT). Returns pid."""
    return _signal_broker(_signal.SIGCONT, **kw)


# ---------------------------------------------------------------------------------------------
# CLI
