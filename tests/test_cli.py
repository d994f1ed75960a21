"""The `fusewatch` entry point: user mistakes give one line and exit status 2, never a traceback."""
import subprocess
import sys

import pytest


def fw(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fusewatch", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@pytest.mark.parametrize("args,needle", [
    (["engine", "--set", "alerts.on=high"], "alerts.on"),
    (["worker", "--camera", "c", "--source", "ftp://host/x"], "unsupported URI"),
    (["worker", "--camera", "c", "--source", "/nonexistent/video.mp4"], "/nonexistent/video.mp4"),
    (["engine", "--model", "/nonexistent/model.pt"], "not found"),
    (["train", "--data", "/nonexistent/feats", "--out", "/tmp/x.pt"], "/nonexistent/feats"),
    (["--config", "/nonexistent.toml", "engine"], "not found"),
])
def test_user_errors_are_one_line(args, needle):
    r = fw(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = [l for l in r.stderr.strip().splitlines() if l.startswith("fusewatch: error:")]
    assert err and needle in err[-1]


def test_bad_env_var_named():
    import os
    env = dict(os.environ, FUSEWATCH_ENGINE_MAX_BATCH="many")
    r = fw("engine", env=env)
    assert r.returncode == 2 and "engine.max_batch" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_command():
    r = fw("--help")
    assert r.returncode == 0
    for c in ("kafka", "topics", "worker", "replay", "extract", "engine", "export", "alerts", "train",
              "eval", "demo"):
        assert c in r.stdout
