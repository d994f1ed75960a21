"""glibc malloc tuning used by long-running fusewatch processes."""

import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc mallopt is Linux-only")
def test_tune_malloc_applies_both_settings_unless_env_overrides():
    code = "from fusewatch.stream.memory import tune_malloc; print(sorted(tune_malloc()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['arena_max', 'mmap_threshold']"
    env_out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"MALLOC_ARENA_MAX": "4", "PATH": "/usr/bin:/bin"},
    )
    assert env_out.stdout.strip() == "['mmap_threshold']"
