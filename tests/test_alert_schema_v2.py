"""Alert record v2: JSON any consumer reads, checked against the packaged JSON Schema; v1 still read;
the epoch passes through the tracker; the demo's terminal output (item 5)."""

import io
import json
import logging
import math

import jsonschema
import pytest

from fusewatch.engines.serving.alerts import AlertTracker, ClipScore, alert_id
from fusewatch.stream.alert_schema import (
    ALERT_SCHEMA_FILE,
    AlertMessage,
    alert_record,
    decode_alert,
    encode_alert,
    encode_alert_v1,
)
from fusewatch.stream.config import load_config
from fusewatch.stream.schema import Evidence, SchemaError

SCHEMA = json.loads(ALERT_SCHEMA_FILE.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def alert(**kw):
    base = dict(
        id="a1",
        type="new",
        camera="Kamera-Süd/1",
        score=0.9,
        peak=0.95,
        start_clip=3,
        end_clip=5,
        start_time=1.7e9 + 0.1,
        end_time=1.7e9 + 2.5,
        model_name="lego",
        model_version="abc123",
        backend="onnxruntime",
        evidence=[Evidence("fusewatch.features", 1, 42)],
        produced=1.7e9 + 3,
    )
    base.update(kw)
    return AlertMessage(**base)


def test_schema_file_is_a_valid_json_schema_shipped_as_package_data():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert ALERT_SCHEMA_FILE.parent.name == "schemas" and ALERT_SCHEMA_FILE.parent.parent.name == "stream"


@pytest.mark.parametrize(
    "kw", [{}, {"epoch": 7}, {"type": "end", "evidence": []}, {"anomaly_map": [[0.0, 0.5], [1.0, 0.25]], "epoch": 2}]
)
def test_encoder_output_validates_and_round_trips(kw):
    a = alert(**kw)
    raw = encode_alert(a)
    assert b"\n" not in raw and raw.startswith(b"{")
    doc = json.loads(raw.decode("utf-8"))  # plain UTF-8 JSON: any consumer reads it
    VALIDATOR.validate(doc)
    assert doc["v"] == 2 and doc["camera"] == "Kamera-Süd/1" and doc["model"]["version"] == "abc123"
    assert doc["epoch"] == kw.get("epoch", 0)
    assert decode_alert(raw) == a


def test_v1_msgpack_records_are_still_read():
    a = alert(epoch=0)
    b = decode_alert(encode_alert_v1(a))
    assert b.v == 1 and b.epoch == 0 and b.anomaly_map is None
    b.v = 2
    assert b == a
    VALIDATOR.validate(json.loads(encode_alert(decode_alert(encode_alert_v1(a)))))  # converted to v2


def test_non_finite_values_never_reach_the_wire():
    with pytest.raises(SchemaError) as e:
        encode_alert(alert(score=math.nan))
    assert e.value.reason == "non_finite"
    raw = encode_alert(alert()).replace(b'"score":0.9', b'"score":NaN')
    with pytest.raises(SchemaError) as e:
        decode_alert(raw)
    assert e.value.reason == "non_finite"


def _mutated(fn):
    d = alert_record(alert(anomaly_map=[[0.1]]))
    fn(d)
    return d


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda d: d.update(v=3), "unsupported_version"),
        (lambda d: d.pop("v"), "missing_version"),
        (lambda d: d.update(kind="features"), "wrong_kind"),
        (lambda d: d.pop("camera"), "missing_field"),
        (lambda d: d.update(camera=""), "bad_field"),
        (lambda d: d.update(type="open"), "bad_alert_type"),
        (lambda d: d.update(epoch=-1), "out_of_range"),
        (lambda d: d.update(epoch=True), "bad_field"),
        (lambda d: d.update(end_clip=5.5), "bad_field"),
        (lambda d: d["model"].pop("version"), "missing_field"),
        (lambda d: d.update(anomaly_map=[[0.1, 0.2], [0.3]]), "bad_shape"),
        (lambda d: d.update(anomaly_map=[[1.5]]), "bad_field"),
    ],
)
def test_decoder_and_json_schema_reject_the_same_bad_records(mutate, reason):
    d = _mutated(mutate)
    with pytest.raises(SchemaError) as e:
        decode_alert(json.dumps(d).encode())
    assert e.value.reason == reason
    if reason != "bad_shape":  # JSON Schema cannot say "rows of equal length"
        assert not VALIDATOR.is_valid(d)


@pytest.mark.parametrize(
    "raw,reason",
    [(b"{not json", "undecodable"), (b'{"v": 2, \xff}', "undecodable"), (b" [1, 2]", "undecodable"), (b"", "empty")],
)
def test_garbage_is_a_schema_error(raw, reason):
    with pytest.raises(SchemaError) as e:
        decode_alert(raw)
    assert e.value.reason in (reason, "not_a_map")


def test_tracker_carries_the_stream_epoch_into_the_record_and_the_id():
    cfg = load_config(env={}, overrides={"alerts.min_duration": 0, "alerts.thresholds": "config"})
    tr = AlertTracker("cam", cfg.alerts, "lego", "v9", "onnxruntime")
    out = []
    for i, s in enumerate([0.9, 0.9, 0.1]):
        out += tr.step(ClipScore(i, s, i, i + 1, 100 + i, 101 + i, Evidence("f", 0, i), epoch=4))
    assert [a.type for a in out] == ["new", "end"]
    assert all(a.epoch == 4 and a.id == alert_id("cam", 0, "v9", 4) != alert_id("cam", 0, "v9") for a in out)
    assert json.loads(encode_alert(out[0]))["epoch"] == 4


def test_demo_console_does_not_wrap_alert_lines_when_piped():
    from fusewatch.cli.demo import human_console

    con = human_console()
    con.file = io.StringIO()  # not a terminal
    line = "  new    camera=" + "x" * 150 + " clips 1–9 score=0.93 peak=0.97 id=" + "f" * 20
    con.print(line)
    assert con.file.getvalue() == line + "\n"


def test_demo_hides_info_lines_unless_a_level_is_asked_for(monkeypatch):
    from argparse import Namespace

    from fusewatch.cli.demo import quiet_info_logs

    lg = logging.getLogger("fusewatch")
    old = lg.level
    try:
        monkeypatch.delenv("FUSEWATCH_LOG_LEVEL", raising=False)
        lg.setLevel(logging.INFO)
        quiet_info_logs(Namespace(log_level="INFO"))
        assert lg.level == logging.INFO  # --log-level given: left alone
        quiet_info_logs(Namespace())
        assert lg.level == logging.WARNING
        assert not logging.getLogger("fusewatch.stream.worker").isEnabledFor(logging.INFO)
    finally:
        lg.setLevel(old)


def _with(**fields) -> bytes:
    d = json.loads(encode_alert(alert()))
    d.update(fields)
    return json.dumps(d).encode()


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"score": 10**400}, "out_of_range"),
        ({"start_time": 10**30}, "out_of_range"),
        ({"score": 1.5}, "out_of_range"),
        ({"camera": "\ud800"}, "bad_field"),
        ({"id": "../../escaped"}, "bad_field"),
        ({"id": "/abs"}, "bad_field"),
        ({"id": ".."}, "bad_field"),
        ({"id": ""}, "bad_field"),
        ({"id": "x" * 129}, "bad_field"),
        ({"id": "a\r\nX-Injected: 1"}, "bad_field"),
        ({"start_clip": -1}, "out_of_range"),
        ({"end_clip": 2}, "bad_field"),
        ({"end_time": 1.7e9}, "bad_field"),
        ({"evidence": [{"topic": "t", "partition": -1, "offset": 0}]}, "out_of_range"),
        ({"model": {"name": "lego", "version": "\udfff", "backend": "x"}}, "bad_field"),
    ],
)
def test_hostile_alert_fields_are_rejected_with_a_reason(fields, reason):
    """Second adversarial review: these decoded before and then broke consumers (OverflowError in
    float(), UnicodeEncodeError when re-encoding, ids naming files outside the evidence folder)."""
    raw = _with(**fields)
    with pytest.raises(SchemaError) as e:
        decode_alert(raw)
    assert e.value.reason == reason
    cross_field = "end_clip" in fields or "end_time" in fields  # beyond what a JSON Schema can say
    assert not VALIDATOR.is_valid(json.loads(raw)) or "\\ud" in raw.decode() or cross_field


def test_hostile_evidence_and_health_records_are_rejected():
    from fusewatch.stream.records import decode_record, encode_health

    good = json.loads(encode_health("c1", "frozen", "ok", 1.7e9))
    assert decode_record(json.dumps(good).encode(), "health")["state"] == "frozen"
    for bad in ({"since": float("nan")}, {"since": 10**400}, {"detail": "\ud800"}):
        with pytest.raises(SchemaError):
            decode_record(json.dumps({**good, **bad}).encode(), "health")
