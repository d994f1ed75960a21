"""SASL/PLAIN on the local broker's second listener (127.0.0.1:9094, user fusewatch)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.schema import FeatureMessage, Representation, decode_features
from fusewatch.stream.transport.base import TransportError

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(60)]

USER, PASSWORD = "fusewatch", "fusewatch-secret"


def sasl(addr: str, user: str = USER, password: str = PASSWORD, **extra) -> dict:
    return {
        "kafka.bootstrap_servers": addr,
        "kafka.security_protocol": "SASL_PLAINTEXT",
        "kafka.sasl_mechanism": "PLAIN",
        "kafka.sasl_plain_username": user,
        "kafka.sasl_plain_password": password,
        "kafka.connect_timeout_s": 10,
        **extra,
    }


def roundtrip(cfg, topic: str, make_transport) -> None:
    from fusewatch.stream.transport.kafka import KafkaTransport  # noqa: F401 - import errors surface here

    msg = FeatureMessage(
        camera="cam-sasl",
        clip=7,
        pts_start=0.0,
        pts_end=1.5,
        wall_start=1.7e9,
        wall_end=1.7e9 + 1.5,
        frame_start=0,
        frame_end=15,
        reps=[Representation("flow", np.arange(4, dtype=np.float32))],
    )
    t = make_transport(cfg)
    t.produce(topic, msg.camera, msg.encode())
    t.flush(timeout=20)
    t.subscribe([topic], group_id=f"g-{topic}")
    deadline, recs = time.monotonic() + 30, []
    while not recs and time.monotonic() < deadline:
        recs = t.poll(timeout=0.5)
    assert len(recs) == 1
    got = decode_features(recs[0].value)
    assert (got.camera, got.clip) == ("cam-sasl", 7)
    np.testing.assert_array_equal(got.reps[0].array, np.arange(4, dtype=np.float32))
    t.commit({recs[0].tp: recs[0].offset + 1})


def test_sasl_plain_credentials_from_config(kafka_sasl_bootstrap, make_topic, make_transport):
    cfg = load_config(env={}, overrides=sasl(kafka_sasl_bootstrap))
    roundtrip(cfg, make_topic("sasl"), make_transport)


def test_sasl_plain_credentials_from_env(kafka_sasl_bootstrap, make_topic, make_transport, monkeypatch):
    for k, v in sasl(kafka_sasl_bootstrap).items():
        monkeypatch.setenv("FUSEWATCH_" + k.upper().replace(".", "_"), str(v))
    cfg = load_config()  # reads os.environ
    assert cfg.kafka.security_protocol == "SASL_PLAINTEXT" and cfg.kafka.sasl_plain_username == USER
    assert cfg.redacted()["kafka"]["sasl_plain_password"] == "***"
    roundtrip(cfg, make_topic("sasl-env"), make_transport)


@pytest.mark.parametrize("user,password", [(USER, "wrong-password"), ("nobody", PASSWORD)])
def test_sasl_wrong_credentials_fail_fast(kafka_sasl_bootstrap, user, password, caplog):
    from fusewatch.stream.transport.kafka import AuthenticationError, KafkaTransport

    caplog.set_level(logging.DEBUG)
    cfg = load_config(env={}, overrides=sasl(kafka_sasl_bootstrap, user, password, **{"kafka.connect_timeout_s": 15}))
    t0 = time.monotonic()
    with pytest.raises(TransportError) as ei:
        KafkaTransport(cfg)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, f"took {elapsed:.1f}s (connect_timeout_s=15): not fast"
    assert isinstance(ei.value, AuthenticationError)
    msg = str(ei.value)
    assert "authentication failed" in msg.lower() and repr(user) in msg and "\n" not in msg
    assert password not in msg and password not in caplog.text


def test_sasl_secret_not_logged_on_success(kafka_sasl_bootstrap, make_topic, make_transport, caplog):
    caplog.set_level(logging.DEBUG)  # kafka-python's DEBUG logs print SASL tokens: must be redacted
    cfg = load_config(env={}, overrides=sasl(kafka_sasl_bootstrap))
    roundtrip(cfg, make_topic("sasl-log"), make_transport)
    assert "SaslAuthenticate" in caplog.text  # the request was logged ...
    assert PASSWORD not in caplog.text  # ... without the password


def test_cli_wrong_password_debug_logs_never_show_it(kafka_sasl_bootstrap, tmp_path):
    """A failing SASL run of the CLI with DEBUG logs (text and JSON): the password from --set and
    from the environment appears in no line of its output; the failure is one line, exit 2."""
    import os
    import subprocess
    import sys

    secret = "wrong-pw-7f3a9c"
    for fmt, how in (("text", "set"), ("json", "env")):
        env = dict(os.environ)
        args = [
            sys.executable,
            "-m",
            "fusewatch",
            "--transport",
            "kafka",
            "--bootstrap",
            kafka_sasl_bootstrap,
            "--log-level",
            "DEBUG",
            "--log-format",
            fmt,
            "--set",
            "kafka.security_protocol=SASL_PLAINTEXT",
            "--set",
            "kafka.sasl_mechanism=PLAIN",
            "--set",
            f"kafka.sasl_plain_username={USER}",
            "--set",
            "kafka.connect_timeout_s=10",
        ]
        if how == "set":
            args += ["--set", f"kafka.sasl_plain_password={secret}"]
        else:
            env["FUSEWATCH_KAFKA_SASL_PLAIN_PASSWORD"] = secret
        args += ["--set", f"topics.features=fwtest.sasl-cli-{fmt}", "topics", "create"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 2, out[-3000:]
        assert "DEBUG" in out and "sasl_plain_password" in out  # DEBUG lines, redacted config among them
        err = [ln for ln in r.stderr.splitlines() if ln.startswith("fusewatch: error:")]
        assert len(err) == 1 and "authentication failed" in err[0].lower() and "Traceback" not in out
        assert secret not in out
