"""Test-wide settings.

kafka-python 3.0.12 loads its protocol schemas with ``importlib.resources.read_text``/``open_text``,
deprecated since Python 3.11: one DeprecationWarning per schema (hundreds per run) that only buries
the warnings that are ours. They are silenced here, for that module only.

Shared fixtures: ``restore_logging`` (undo the log handler a CLI command installs) and
``torch_one_thread`` (module scope: one torch intra-op thread for tiny tensors).
"""

import logging

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
