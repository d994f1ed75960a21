"""One config schema: TOML < env < CLI precedence, typed coercion, one-line errors."""
import pytest

from fusewatch.stream.config import ConfigError, load_config, parse_set


def test_defaults_validate():
    cfg = load_config(env={})
    assert cfg.transport == "bus" and cfg.clips.clip_len == 16 and cfg.source.sample_fps == 10


def test_precedence_toml_env_cli(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('transport = "kafka"\n[kafka]\nbootstrap_servers = "toml:1"\nclient_id = "t"\n'
                 '[engine]\nmax_batch = 8\n[features]\nextractors = ["flow"]\n')
    env = {"FUSEWATCH_KAFKA_BOOTSTRAP_SERVERS": "env:2", "FUSEWATCH_ENGINE_MAX_BATCH": "16"}
    cfg = load_config(f, overrides=parse_set(["engine.max_batch=32"]), env=env)
    assert cfg.transport == "kafka" and cfg.kafka.client_id == "t"
    assert cfg.kafka.bootstrap_servers == "env:2"
    assert cfg.engine.max_batch == 32
    assert cfg.features.extractors == ["flow"]


@pytest.mark.parametrize("over,field", [
    ({"alerts.on": "high"}, "alerts.on"),
    ({"source.overflow": "spill"}, "source.overflow"),
    ({"kafka.security_protocol": "TLS"}, "kafka.security_protocol"),
    ({"nosuch.field": "1"}, "nosuch.field"),
    ({"model.window": "1"}, "model.window"),
    ({"features.extractors": "resnet"}, "features.extractors"),
    ({"features.cnn_spatial": "gem"}, "features.cnn_spatial"),
    ({"alerts.on": "0.2", "alerts.off": "0.5"}, "alerts.off/on"),
])
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
    cfg = load_config(overrides={"kafka.security_protocol": "SASL_PLAINTEXT", "kafka.sasl_mechanism": "PLAIN",
                                 "kafka.sasl_plain_username": "u", "kafka.sasl_plain_password": "s3cret",
                                 "kafka.compression_type": "gzip"}, env={})
    kw = cfg.kafka.client_kwargs()
    assert kw["sasl_plain_password"] == "s3cret" and kw["compression_type"] == "gzip"
    assert kw["bootstrap_servers"] == ["127.0.0.1:9092"]
    assert "s3cret" not in repr(cfg.redacted())
