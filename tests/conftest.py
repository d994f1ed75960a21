"""Test-wide settings.

kafka-python 3.0.12 loads its protocol schemas with ``importlib.resources.read_text``/``open_text``,
deprecated since Python 3.11: one DeprecationWarning per schema (hundreds per run) that only buries
the warnings that are ours. They are silenced here, for that module only.

Shared fixtures: ``restore_logging`` (undo the log handler a CLI command installs) and
``torch_one_thread`` (module scope: one torch intra-op thread for tiny tensors).

Every test is checked for Kafka clients it leaves running (``no_leaked_kafka_threads``): a client
whose I/O thread outlives its test keeps reconnecting to brokers that are gone, and its log output
and sockets leak into whichever tests run next. The leaking test fails, naming the threads.
"""

import logging
import threading
import time

import pytest


def pytest_configure(config):
    config.addinivalue_line("filterwarnings", "ignore:(read_text|open_text) is deprecated:DeprecationWarning")


@pytest.fixture
def restore_logging():
    """CLI commands install the project's log handler (propagate off); undo it for later tests."""
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in ("fusewatch", "kafka")}
    yield
    for n, (handlers, propagate) in saved.items():
        logging.getLogger(n).handlers[:] = handlers
        logging.getLogger(n).propagate = propagate


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny tensors: intra-op threads only add overhead on shared cores; restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _kafka_threads() -> set[threading.Thread]:
    """kafka-python's background threads: producer senders, consumer/admin I/O loops, heartbeats."""
    return {
        t
        for t in threading.enumerate()
        if t.is_alive() and (t.name.startswith("kafka-io-") or type(t).__module__.startswith("kafka."))
    }


def _stop(t: threading.Thread) -> None:
    """Stop a leaked client thread through its own shutdown hook, so later tests are not disturbed."""
    try:
        if hasattr(t, "force_close"):  # producer sender
            t.force_close()
        else:  # an I/O loop thread runs ``selector.run_forever``
            owner = getattr(getattr(t, "_target", None), "__self__", None)
            if owner is not None and hasattr(owner, "stop"):
                owner.stop(timeout_ms=2000)
        t.join(2.0)
    except Exception:  # noqa: BLE001 - best effort; the test fails anyway
        pass


@pytest.fixture(autouse=True)
def no_leaked_kafka_threads():
    before = _kafka_threads()
    yield
    deadline = time.monotonic() + 5.0
    while (left := _kafka_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        names = sorted(f"{t.name} ({type(t).__module__}.{type(t).__name__})" for t in left)
        for t in left:
            _stop(t)
        pytest.fail(f"Kafka client thread(s) left running by this test: {names}", pytrace=False)
