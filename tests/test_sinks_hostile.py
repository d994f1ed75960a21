"""Hostile records on the alerts topic: ``fusewatch notify`` (Notifier + webhook sink) and
``fusewatch alerts`` must isolate every record — whatever one record raises while it is decoded,
encoded, formatted or handed over, it is counted and skipped (or dead-lettered), the records around
it are delivered or shown, and commits cover only records that were handled or counted.

Some poison is injected by wrapping the decoder/encoder, so that these tests hold whatever the
schema module accepts: the consumers must be safe on their own."""

import json
import logging
import time
import types
from dataclasses import replace
from urllib.parse import unquote

import pytest

import fusewatch.cli.engine as eng
import fusewatch.sinks.notifier as notifier_mod
import fusewatch.sinks.webhook as webhook_mod
from fusewatch.sinks.base import Sink
from fusewatch.sinks.notifier import Notifier
from fusewatch.sinks.webhook import DeadLetterFile, WebhookSink
from fusewatch.stream.alert_schema import encode_alert
from fusewatch.stream.config import load_config
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.testing import sample_alert
from tests.sink_receivers import WebhookReceiver

SECRET = "s3cr3t-key"


def record(aid: str, **kw) -> bytes:
    """A valid v2 alert record for ``aid`` (fields overridable)."""
    return encode_alert(sample_alert("cam1", id=aid, **kw))


def raw_alert(**fields) -> bytes:
    """A v2 alert record written by hand (fields the encoder would refuse: big ints, lone surrogates)."""
    d = json.loads(record("raw"))
    d.update(fields)
    return json.dumps(d, separators=(",", ":")).encode()  # ensure_ascii: lone surrogates as \\ud800


def notify_cfg(tmp_path, url: str, **over):
    o = {
        "webhook.urls": url,
        "webhook.secret": SECRET,
        "webhook.retries": 3,
        "webhook.backoff_initial": 1.0,
        "webhook.backoff_max": 2.0,
        "webhook.timeout": 5,
        "webhook.dead_letter_file": str(tmp_path / "dl.jsonl"),
    }
    o.update(over)
    return load_config(env={}, overrides=o)


def bus_with(cfg, values: list[bytes]) -> InProcessBus:
    bus = InProcessBus(partitions=1)
    prod = BusTransport(bus)
    for v in values:
        prod.produce(cfg.topics.alerts, "cam1", v)
    return bus


# --- notify (item 7) ---------------------------------------------------------------------------


@pytest.fixture
def rx():
    """A live webhook receiver (real HTTP server) checking signatures with SECRET."""
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


def webhook_notifier(cfg, values: list[bytes], url: str):
    """A notifier with one webhook sink to ``url`` over an in-process bus holding ``values``."""
    bus = bus_with(cfg, values)
    sink = WebhookSink(url, cfg.webhook, DeadLetterFile(cfg.webhook.dead_letter_file))
    n = Notifier(cfg, BusTransport(bus), [sink])
    n.subscribe(from_beginning=True)
    return bus, n


def test_notifier_skips_and_counts_poison_records_between_valid_ones(rx, tmp_path, monkeypatch, caplog):
    real_decode, real_encode = notifier_mod.decode_alert, notifier_mod.encode_alert

    def decode(data, *a, **kw):
        if b"decode-bomb" in bytes(data):
            raise OverflowError("int too large to convert to float")  # not a SchemaError
        return real_decode(data, *a, **kw)

    def encode(alert):
        if alert.id == "encode-bomb":
            raise RuntimeError("encoder bug")  # encode used to run outside the try
        return real_encode(alert)

    monkeypatch.setattr(notifier_mod, "decode_alert", decode)
    monkeypatch.setattr(notifier_mod, "encode_alert", encode)
    cfg = notify_cfg(tmp_path, rx.url)
    values = [
        record("good1"),
        record("decode-bomb"),
        raw_alert(id="lone-\ud800"),
        record("good2"),
        raw_alert(id="big", score=10**400),
        record("encode-bomb"),
        b"\x00\x01garbage",
        record("good3"),
    ]
    bus, n = webhook_notifier(cfg, values, rx.url)
    with caplog.at_level(logging.WARNING, logger="fusewatch.sinks.notifier"):
        st = n.run(idle_exit_s=0.3)  # must return, not raise
    assert set(rx.delivered()) == {"good1:new:5", "good2:new:5", "good3:new:5"}
    assert st.records == len(values) and st.delivered == 3 and st.malformed == 5
    assert sum(st.malformed_reasons.values()) == 5
    assert st.malformed_reasons["OverflowError"] >= 1 and st.malformed_reasons["RuntimeError"] == 1
    assert bus.committed(cfg.notify.group_id, (cfg.topics.alerts, 0)) == len(values)
    warned = [r for r in caplog.records if "skipping malformed" in r.getMessage()]
    assert len(warned) == len(st.malformed_reasons)  # once per reason
    assert not (tmp_path / "dl.jsonl").exists()


def test_notifier_logs_a_flood_of_bad_records_once_and_keeps_going(rx, tmp_path, caplog):
    cfg = notify_cfg(tmp_path, rx.url)
    values = [b"\x00garbage"] * 50 + [record("after")]
    bus, n = webhook_notifier(cfg, values, rx.url)
    with caplog.at_level(logging.WARNING, logger="fusewatch.sinks.notifier"):
        st = n.run(idle_exit_s=0.3)
    assert st.malformed == 50 and set(rx.delivered()) == {"after:new:5"}
    assert sum("skipping malformed" in r.getMessage() for r in caplog.records) == 1
    assert bus.committed(cfg.notify.group_id, (cfg.topics.alerts, 0)) == 51


class _Recorder(Sink):
    def __init__(self, name, fail_on=()):
        self.name, self.fail_on, self.got = name, set(fail_on), []

    def deliver(self, alert, record):
        if alert.id in self.fail_on:
            raise KeyError(f"cannot format {alert.id}")  # a sink bug, not SinkUnavailable
        self.got.append(alert.id)


def test_a_sink_failing_on_one_alert_neither_stops_the_group_nor_the_other_sinks(tmp_path):
    cfg = notify_cfg(tmp_path, "http://127.0.0.1:1/x")
    bus = bus_with(cfg, [record("a"), record("bad"), record("b")])
    flaky, other = _Recorder("flaky", fail_on={"bad"}), _Recorder("other")
    n = Notifier(cfg, BusTransport(bus), [flaky, other])
    n.subscribe(from_beginning=True)
    st = n.run(idle_exit_s=0.3)
    assert flaky.got == ["a", "b"] and other.got == ["a", "bad", "b"]
    assert st.failed == 1 and st.failed_reasons == {"KeyError": 1} and st.records == 3
    assert bus.committed(cfg.notify.group_id, (cfg.topics.alerts, 0)) == 3


# --- webhook (item 8) --------------------------------------------------------------------------

HOSTILE_IDS = ["a\r\nX-Injected: 1", "alert-\U0001f642", "alert\u00e9", "lone-\ud800", "50%off"]


def test_webhook_header_unsafe_ids_are_encoded_and_delivered_at_once(rx, tmp_path):
    cfg = notify_cfg(tmp_path, rx.url)  # backoff 1 s: any retry would show in the timing
    sink = WebhookSink(rx.url, cfg.webhook, DeadLetterFile(cfg.webhook.dead_letter_file))
    t0 = time.monotonic()
    for aid in HOSTILE_IDS + ["plain"]:
        a = sample_alert("cam1", id=aid)
        sink.deliver(a, json.dumps({"id": aid}).encode())
    assert time.monotonic() - t0 < 0.9, "an unsafe header value was retried with backoff"
    assert sink.attempts == len(HOSTILE_IDS) + 1 and sink.dead_lettered == 0
    events = [r["event"] for r in rx.requests]
    assert all(not r["failed"] and r["signature_ok"] for r in rx.requests)
    assert [unquote(e, errors="surrogatepass") for e in events] == [f"{i}:new:5" for i in HOSTILE_IDS + ["plain"]]
    assert events[-1] == "plain:new:5" and all(e.isascii() and e.isprintable() for e in events)


def test_webhook_request_errors_fail_fast_to_the_dead_letter_file(rx, tmp_path, monkeypatch):
    cfg = notify_cfg(tmp_path, rx.url)
    dl = DeadLetterFile(cfg.webhook.dead_letter_file)
    bad_url = WebhookSink(rx.url.replace("/hook", "/ho ok\r\n"), cfg.webhook, dl)
    good = WebhookSink(rx.url, cfg.webhook, dl)
    t0 = time.monotonic()
    bad_url.deliver(sample_alert("cam1", id="lone-\ud800"), b'{"v":2}')  # invalid URL: no retry
    real_sign = webhook_mod.sign
    monkeypatch.setattr(webhook_mod, "sign", lambda *a: (_ for _ in ()).throw(RuntimeError("no key")))
    good.deliver(sample_alert("cam1", id="unsigned"), b'{"v":2}')  # cannot build: no retry
    monkeypatch.setattr(webhook_mod, "sign", real_sign)
    good.deliver(sample_alert("cam1", id="later"), b'{"v":2}')  # not held up
    assert time.monotonic() - t0 < 0.9, "a request error was retried with backoff"
    assert bad_url.attempts == 1 and good.attempts == 2 and rx.delivered().keys() == {"later:new:5"}
    e1, e2 = dl.read()
    assert e1["id"] == "lone-\ud800" and e1["attempts"] == 1 and "invalid request" in e1["error"]
    assert e2["id"] == "unsigned" and e2["attempts"] == 1 and "cannot build the request" in e2["error"]
    assert bad_url.dead_lettered == 1 and good.dead_lettered == 1


# --- fusewatch alerts (item 9) -----------------------------------------------------------------


@pytest.fixture
def alerts_cli(monkeypatch):
    """Runs ``cmd_alerts`` over an in-process bus holding the given records."""
    monkeypatch.setattr(eng, "_install_stop", lambda stop: None)  # keep pytest's SIGINT handler

    def run(values: list[bytes], as_json: bool) -> int:
        cfg = load_config(env={})
        cfg.transport = "kafka"
        bus = bus_with(cfg, values)
        monkeypatch.setattr(eng, "make_transport", lambda cfg, group_id=None, **kw: BusTransport(bus))
        args = types.SimpleNamespace(from_beginning=True, timeout=0.3, json=as_json, camera=None)
        return eng.cmd_alerts(args, cfg)

    return run


def _poison_decoders(monkeypatch):
    """Make the CLI's decoders hand over hostile values the schema module might refuse."""
    real_alert, real_record = eng.decode_alert, eng.decode_record

    def decode_alert(data, *a, **kw):
        data = bytes(data)
        if b"surrogate" in data:
            return replace(real_alert(data, *a, **kw), id="x\ud800", camera="cam\udfff")
        if b"crash" in data:
            raise RecursionError("maximum recursion depth exceeded")
        return real_alert(data, *a, **kw)

    def decode_record(data, kind, *a, **kw):
        obj = real_record(data, kind, *a, **kw)
        if obj.get("alert_id") == "nan":
            obj = dict(obj, produced=float("nan"), clip={"duration": float("inf"), "url": "c\ud800"})
        return obj

    monkeypatch.setattr(eng, "decode_alert", decode_alert)
    monkeypatch.setattr(eng, "decode_record", decode_record)


EVIDENCE_NAN = (
    b'{"v":2,"kind":"evidence","alert_id":"nan","camera":"c","clip":{},"snapshot":null,"alert":{},"produced":1}'
)


def test_alerts_table_keeps_showing_valid_alerts_after_unencodable_text(alerts_cli, monkeypatch, capsys):
    _poison_decoders(monkeypatch)
    values = [record("good1"), record("surrogate"), record("good2"), record("crash"), EVIDENCE_NAN, record("good3")]
    assert alerts_cli(values, as_json=False) == 0
    out, err = capsys.readouterr()
    for aid in ("good1", "good2", "good3", "x?"):
        assert aid in out, out
    assert "cam?" in out and "\ud800" not in out
    assert "1 malformed record(s) skipped (RecursionError 1)" in err and "UnicodeEncodeError" not in err


def test_alerts_json_lines_are_strict_json_after_bad_records(alerts_cli, monkeypatch, capsys):
    _poison_decoders(monkeypatch)
    health = b'{"v":2,"kind":"health","camera":"c","state":"ok","previous":"ok","since":1e400,"detail":"","produced":1}'
    values = [record("good1"), record("surrogate"), EVIDENCE_NAN, health, record("crash"), record("good2")]
    assert alerts_cli(values, as_json=True) == 0
    out, err = capsys.readouterr()

    def strict(s):
        raise ValueError(f"not JSON: {s}")

    lines = [json.loads(line, parse_constant=strict) for line in out.splitlines()]
    ids = [x.get("id") or x.get("alert_id") or x.get("kind") for x in lines]
    assert ids[0] == "good1" and ids[-1] == "good2" and "nan" in ids, ids
    ev = next(x for x in lines if x.get("alert_id") == "nan")
    assert ev["produced"] is None and ev["clip"]["duration"] is None and ev["clip"]["url"] == "c\ud800"
    assert all(x["since"] is None for x in lines if x.get("kind") == "health")
    assert "malformed record(s) skipped" in err
