"""One config schema: TOML < env < CLI precedence, typed coercion, one-line errors."""

import pytest

from fusewatch.stream.config import ConfigError, load_config, parse_set


def test_defaults_validate():
    cfg = load_config(env={})
    assert cfg.transport == "bus" and cfg.clips.clip_len == 16 and cfg.source.sample_fps == 10


def test_precedence_toml_env_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        'transport = "kafka"\n[kafka]\nbootstrap_servers = "toml:1"\nclient_id = "t"\n'
        '[engine]\nmax_batch = 8\n[features]\nextractors = ["flow"]\n'
    )
    env = {"FUSEWATCH_KAFKA_BOOTSTRAP_SERVERS": "env:2", "FUSEWATCH_ENGINE_MAX_BATCH": "16"}
    cfg = load_config(f, overrides=parse_set(["engine.max_batch=32"]), env=env)
    assert cfg.transport == "kafka" and cfg.kafka.client_id == "t"
    assert cfg.kafka.bootstrap_servers == "env:2"
    assert cfg.engine.max_batch == 32
    assert cfg.features.extractors == ["flow"]


@pytest.mark.parametrize(
    "over,field",
    [
        ({"alerts.on": "high"}, "alerts.on"),
        ({"source.overflow": "spill"}, "source.overflow"),
        ({"kafka.security_protocol": "TLS"}, "kafka.security_protocol"),
        ({"nosuch.field": "1"}, "nosuch.field"),
        ({"model.window": "1"}, "model.window"),
        ({"features.extractors": "resnet"}, "features.extractors"),
        ({"features.cnn_spatial": "gem"}, "features.cnn_spatial"),
        ({"alerts.on": "0.2", "alerts.off": "0.5"}, "alerts.off/on"),
    ],
)
def test_errors_name_the_field(over, field):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=over, env={})
    msg = str(e.value)
    assert msg.startswith(field) and "\n" not in msg


def test_bad_env_var_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="FUSEWATCH_NOPE"):
        load_config(env={"FUSEWATCH_NOPE": "1"})
    f = tmp_path / "bad.toml"
    f.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(f, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_kafka_settings_pass_through_and_secrets_redacted():
    cfg = load_config(
        overrides={
            "kafka.security_protocol": "SASL_PLAINTEXT",
            "kafka.sasl_mechanism": "PLAIN",
            "kafka.sasl_plain_username": "u",
            "kafka.sasl_plain_password": "s3cret",
            "kafka.compression_type": "gzip",
        },
        env={},
    )
    kw = cfg.kafka.client_kwargs()
    assert kw["sasl_plain_password"] == "s3cret" and kw["compression_type"] == "gzip"
    assert kw["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert "s3cret" not in repr(cfg.redacted())


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"kafka.connect_timeout_s": "nan"}, "kafka.connect_timeout_s: must be a finite number"),
        ({"source.sample_fps": "nan"}, "source.sample_fps: must be a finite number"),
        ({"alerts.cooldown": "inf"}, "alerts.cooldown: must be a finite number"),
        ({"features.flow_width": "100000"}, "features.flow_width: must be <= "),
        ({"worker.metrics_port": "99999"}, "worker.metrics_port: must be <= 65535"),
        ({"kafka.bootstrap_servers": "127.0.0.1:99999"}, "kafka.bootstrap_servers"),
        ({"source.queue_size": "0"}, "source.queue_size: must be >= 1"),
        ({"source.max_width": "8"}, "source.max_width: must be 0 (full resolution) or >= 32"),
        ({"max_message_bytes": "-5"}, "max_message_bytes: must be >= "),
        ({"log_level": "loud"}, "log_level: must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"log_format": "xml"}, "log_format: must be one of text, json"),
    ],
)
def test_nan_inf_and_absurd_values_are_rejected(over, needle):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=over, env={})
    assert str(e.value).startswith(needle) and "\n" not in str(e.value)


def test_every_numeric_field_has_a_finite_range():
    """Documented, enforced ranges: each int/float field has a lower and an upper bound."""
    import typing

    import annotated_types as at

    from fusewatch.stream.config import SECTIONS, Config

    fields = [(n, f) for n, f in Config.model_fields.items() if n not in SECTIONS]
    fields += [(f"{s}.{n}", f) for s, cls in SECTIONS.items() for n, f in cls.__pydantic_fields__.items()]
    checked = 0
    for name, f in fields:
        ann = f.annotation
        if typing.get_origin(ann) is list:
            continue  # onnx_mean/onnx_std: finite (NaN/inf rejected), checked together
        base = [a for a in getattr(ann, "__args__", (ann,)) if a is not type(None)][0]
        if base not in (int, float):
            continue
        meta = list(f.metadata) + [m for a in getattr(ann, "__args__", ()) for m in getattr(a, "__metadata__", ())]
        lower = any(isinstance(m, (at.Ge, at.Gt)) for m in meta)
        upper = any(isinstance(m, (at.Le, at.Lt)) for m in meta)
        assert lower and upper, f"{name}: no range"
        checked += 1
    assert checked > 40


def test_set_values_from_env_and_toml_are_typed_and_secret(tmp_path):
    env = {
        "FUSEWATCH_FEATURES_EXTRACTORS": "flow,audio",
        "FUSEWATCH_KAFKA_SASL_PLAIN_PASSWORD": "pw-123",
        "FUSEWATCH_LOG_LEVEL": "debug",
        "FUSEWATCH_WORKER_METRICS_PORT": "none",
        "FUSEWATCH_TRANSPORT": "kafka",
    }
    cfg = load_config(env=env)
    assert cfg.features.extractors == ["flow", "audio"] and cfg.log_level == "DEBUG"
    assert cfg.worker.metrics_port is None and cfg.transport == "kafka"
    assert "pw-123" not in repr(cfg) and "pw-123" not in str(cfg.redacted())
    assert cfg.kafka.sasl_plain_password.get_secret_value() == "pw-123" and cfg.secrets() == ["pw-123"]
    with pytest.raises(ConfigError, match="FUSEWATCH_KAFKA: unknown"):  # a section is not a variable
        load_config(env={"FUSEWATCH_KAFKA": "x"})
    f = tmp_path / "c.toml"
    f.write_text("[kafka]\nsasl_plain_password = 7\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"^kafka\.bogus: unknown configuration field"):
        load_config(f, env={})


def test_assignments_are_revalidated():
    cfg = load_config(env={})
    cfg.train.epochs = 0
    with pytest.raises(ConfigError, match=r"^train\.epochs: must be >= 1"):
        cfg.validate()
    cfg.train.epochs = 3
    assert cfg.validate() is cfg


def test_parse_set_never_echoes_a_malformed_value():
    with pytest.raises(ConfigError) as e:
        parse_set(["kafka.sasl_plain_password:hunter2"])
    assert "hunter2" not in str(e.value) and "kafka.sasl_plain_password" in str(e.value)


def test_defaults_live_in_the_schema_only():
    """No ``getattr(cfg, "field", default)`` fallbacks: features.cnn_frames was 8 in the schema but
    0 in such a fallback."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    hits = [
        f"{p.relative_to(root)}: {m.group(0)}"
        for d in ("stream", "engines")
        for p in (root / d).rglob("*.py")
        for m in re.finditer(r"getattr\((?:self\.)?cfg(?:\.\w+)?, \"\w+\", [^)]", p.read_text())
    ]
    assert not hits, hits


def test_log_lines_never_contain_a_configured_secret():
    import io
    import logging

    from fusewatch.stream.logs import setup_from_config

    cfg = load_config(overrides={"kafka.sasl_plain_password": "s3cret-pw", "log_format": "json"}, env={})
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in ("fusewatch", "kafka")
    }
    buf = io.StringIO()
    try:
        setup_from_config(cfg, stream=buf)
        logging.getLogger("fusewatch.test").warning("token %s", "s3cret-pw", extra={"fields": {"pw": "s3cret-pw"}})
        logging.getLogger("kafka.conn").warning("sasl %r", b"\x00u\x00s3cret-pw")
    finally:
        for n, (h, prop, lvl) in saved.items():
            lg = logging.getLogger(n)
            lg.handlers[:] = h
            lg.propagate, lg.level = prop, lvl
    out = buf.getvalue()
    assert out.count("***") >= 3 and "s3cret" not in out
