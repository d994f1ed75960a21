"""The `fusewatch` entry point: user mistakes give one line and exit status 2, never a traceback."""

import subprocess
import sys

import pytest


def fw(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "fusewatch", *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["engine", "--set", "alerts.on=high"], "alerts.on"),
        (["worker", "--camera", "c", "--source", "ftp://host/x"], "unsupported URI"),
        (["worker", "--camera", "c", "--source", "/nonexistent/video.mp4"], "/nonexistent/video.mp4"),
        (["engine", "--model", "/nonexistent/model.pt"], "not found"),
        (["train", "--data", "/nonexistent/feats", "--out", "/tmp/x.pt"], "/nonexistent/feats"),
        (["--config", "/nonexistent.toml", "engine"], "not found"),
    ],
)
def test_user_errors_are_one_line(args, needle):
    r = fw(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("fusewatch: error:")]
    assert err and needle in err[-1]


def test_bad_env_var_named():
    import os

    env = dict(os.environ, FUSEWATCH_ENGINE_MAX_BATCH="many")
    r = fw("engine", env=env)
    assert r.returncode == 2 and "engine.max_batch" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_every_command():
    r = fw("--help")
    assert r.returncode == 0
    for c in ("kafka", "topics", "worker", "replay", "extract", "engine", "export", "alerts", "train", "eval", "demo"):
        assert c in r.stdout


# -- issue 10 item 8: each case a one-line error (exit 2), never a traceback or a silent default ---


def one_line_error(r, needle: str) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("fusewatch: error:")]
    assert len(err) == 1 and needle in err[0], r.stderr[-2000:]
    return err[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.stream.config import load_config

    torch.manual_seed(0)
    p = tmp_path_factory.mktemp("ckpt") / "m.pt"
    cfg = load_config(overrides={"model.window": 4, "model.representations": "a,b", "model.node_dim": 0}, env={})
    save_checkpoint(build_model(cfg.model, {"a": 3, "b": 2}), p)
    return p


def test_set_before_and_after_the_subcommand_both_apply():
    # the earlier --set used to be dropped silently: the default model ran
    one_line_error(fw("--set", "engine.model=/nonexistent.pt", "engine", "--set", "alerts.on=0.9"), "/nonexistent.pt")
    one_line_error(fw("--set", "alerts.on=high", "engine", "--set", "engine.model=/nonexistent.pt"), "alerts.on")
    # later wins: after the subcommand over before it
    one_line_error(fw("--set", "alerts.on=0.9", "engine", "--set", "alerts.on=high"), "alerts.on")


def test_paths_that_are_directories_or_garbage(tmp_path):
    one_line_error(fw("--config", str(tmp_path), "engine"), "is a directory")
    one_line_error(fw("engine", "--model", str(tmp_path)), "is a directory")
    junk = tmp_path / "garbage.onnx"
    junk.write_bytes(b"\x08\x01garbage" * 10)
    one_line_error(fw("engine", "--model", str(junk)), str(junk))


def test_export_out_under_a_file(tmp_path, checkpoint):
    f = tmp_path / "afile"
    f.write_text("x")
    one_line_error(fw("export", "--model", str(checkpoint), "--out", str(f / "sub")), "--out")


def test_train_out_is_a_directory_fails_before_training_and_leaves_nothing(tmp_path):
    data, out = tmp_path / "feats", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    one_line_error(fw("train", "--data", str(data), "--out", str(out)), "is a directory")
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["feats", "out"]


def test_tensorrt_without_a_gpu_is_one_line(checkpoint):
    from fusewatch.engines.serving.backends import tensorrt_status

    r = fw("engine", "--model", str(checkpoint), "--backend", "tensorrt", "--idle-exit", "0.2")
    if tensorrt_status()[0]:  # a machine with TensorRT: the engine runs and exits when idle
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        one_line_error(r, "tensorrt")


def test_secret_in_a_malformed_set_is_not_echoed():
    r = fw("--set", "kafka.sasl_plain_password:hunter2-secret", "engine")
    one_line_error(r, "kafka.sasl_plain_password")
    assert "hunter2" not in r.stderr + r.stdout
    r = fw("--set", "kafka.sasl_plain_password=hunter2-secret", "--set", "kafka.security_protocol=TLS", "engine")
    one_line_error(r, "kafka.security_protocol")
    assert "hunter2" not in r.stderr + r.stdout


def test_replay_negative_loop_and_bad_port_fail_fast():
    import time

    one_line_error(fw("replay", "--loop", "-1", "x.mp4"), "--loop")
    t0 = time.monotonic()
    one_line_error(
        fw("--transport", "kafka", "--bootstrap", "127.0.0.1:99999", "topics", "create"), "kafka.bootstrap_servers"
    )
    assert time.monotonic() - t0 < 10  # validation, not a 15 s connect timeout
    one_line_error(
        fw("--set", "kafka.connect_timeout_s=nan", "--set", "features.flow_width=100000", "engine"),
        "kafka.connect_timeout_s: must be a finite number",
    )


def test_only_fusewatch_errors_are_one_line(monkeypatch):
    """A real bug keeps its traceback; a FusewatchError is one line; --debug shows its traceback."""
    import fusewatch.cli.engine as eng
    from fusewatch.cli import main
    from fusewatch.errors import BackendError

    def bug(args, cfg):
        raise ValueError("a bug, not a user mistake")

    def user(args, cfg):
        raise BackendError("backend 'tensorrt': no CUDA GPU")

    monkeypatch.setattr(eng, "cmd_engine", bug)
    with pytest.raises(ValueError, match="a bug"):
        main(["engine"])
    monkeypatch.setattr(eng, "cmd_engine", user)
    assert main(["engine"]) == 2
    with pytest.raises(BackendError):
        main(["--debug", "engine"])


def test_json_logs_for_the_engine_and_the_older_worker_log_format():
    import json

    for flags in (["--log-format", "json"], ["--set", "worker.log_format=json"]):
        r = fw(*flags, "engine", "--model", "/nonexistent.pt")
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("{")]
        assert lines, r.stderr
        obj = json.loads(lines[0])
        assert obj["logger"] == "fusewatch.engine" and obj["level"] == "WARNING"


def test_debug_logs_show_the_config_redacted():
    r = fw(
        "--log-level",
        "DEBUG",
        "--set",
        "kafka.sasl_plain_password=hunter2-secret",
        "engine",
        "--model",
        "/nonexistent.pt",
    )
    assert "fusewatch.cli" in r.stderr and "sasl_plain_password" in r.stderr
    assert "hunter2" not in r.stderr
