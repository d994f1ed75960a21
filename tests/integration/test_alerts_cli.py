"""`fusewatch alerts` tails the real alert topic: JSON lines, camera filter, malformed records skipped."""

import json
import subprocess
import sys

import pytest

from fusewatch.testing import sample_alert

pytestmark = pytest.mark.kafka


def alerts_cli(bootstrap, topic, *args, **kw):
    """``fusewatch alerts ARGS`` over the real broker, reading ``topic``."""
    cmd = [sys.executable, "-m", "fusewatch", "--transport", "kafka", "--bootstrap", bootstrap]
    return subprocess.run([*cmd, "--set", f"topics.alerts={topic}", "alerts", *args], **kw)


def alert(cam, typ, end):
    return sample_alert(cam, typ, end, produced=0.0)


def test_alerts_command_json_and_camera_filter(kafka_bootstrap, make_topic, make_transport, kafka_cfg):
    topic = make_topic("alertscli")
    p = make_transport(kafka_cfg, consume=False)
    for a in (alert("cam-a", "new", 4), alert("cam-b", "new", 5), alert("cam-a", "end", 9)):
        p.produce(topic, a.camera, a.encode())
    p.produce(topic, "cam-a", b"\x00not an alert")
    p.flush(timeout=30)
    r = alerts_cli(
        kafka_bootstrap,
        topic,
        "--from-beginning",
        "--json",
        "--camera",
        "cam-a",
        "--timeout",
        "4",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [(x["camera"], x["type"], x["end_clip"]) for x in rows] == [("cam-a", "new", 4), ("cam-a", "end", 9)]
    assert rows[0]["evidence"] == [{"topic": "f", "partition": 0, "offset": 4}]
    assert "skipping malformed alert" in r.stderr


def test_alerts_command_needs_kafka():
    r = subprocess.run([sys.executable, "-m", "fusewatch", "alerts"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--transport kafka" in r.stderr and "Traceback" not in r.stderr


def test_alerts_table_survives_markup_camera_ids_and_bad_timestamps(
    kafka_bootstrap, make_topic, make_transport, kafka_cfg
):
    """Camera ids the terminal renderer would read as markup are printed as they are, and records
    with timestamps no date can hold are skipped and counted (the decoder refuses them: capture
    times lie in [0, 1e11] s) without ending the tail: the normal alert after them is shown."""
    import msgpack

    from fusewatch.stream.alert_schema import encode_alert_v1

    topic = make_topic("alertsmarkup")
    p = make_transport(kafka_cfg, consume=False)
    odd = [alert("[bold red]cam[/]", "new", 4), alert("[/]", "update", 5), alert("x[link=file:///etc]y", "end", 6)]
    for i, a in enumerate(odd):
        a.id = f"id-markup-{i}"  # ids are [A-Za-z0-9._-]: the camera carries the markup
        p.produce(topic, "k", a.encode())
    for t in (1e300, -1e15, 2.0**63):
        a = alert("cam-bad-time", "new", 3)
        d = json.loads(a.encode())
        d["start_time"] = d["end_time"] = t
        p.produce(topic, "k", json.dumps(d).encode())
    nan = alert("cam-nan", "new", 7)
    nan.end_time = float("nan")
    raw = msgpack.unpackb(encode_alert_v1(nan), raw=False)  # a v1 (msgpack) record can carry NaN
    p.produce(topic, "k", msgpack.packb(raw, use_bin_type=True))
    raw["end_time"] = 10**30 // 10**12  # int too large for any calendar, still a number
    p.produce(topic, "k", msgpack.packb(raw, use_bin_type=True))
    p.produce(topic, "k", alert("cam-ok", "new", 8).encode())
    p.flush(timeout=30)
    r = alerts_cli(
        kafka_bootstrap,
        topic,
        "--from-beginning",
        "--timeout",
        "4",
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )
    # fusewatch itself printed no traceback (kafka-python may log its own socket errors at close)
    assert r.returncode == 0 and not any(x.startswith("Traceback") for x in r.stderr.splitlines()), r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert any("[bold red]cam[/]" in x and " new " in x for x in lines), r.stdout
    assert any("[/]" in x and "update" in x for x in lines) and any("x[link=file:///" in x for x in lines)
    assert not any("cam-bad-time" in x or "cam-nan" in x for x in lines)  # refused, not printed
    assert any("cam-ok" in x and "new" in x for x in lines), r.stdout  # the tail went on
    assert (
        "skipping malformed alert" in r.stderr
        and "5 malformed record(s) skipped (non_finite 1, out_of_range 4)" in r.stderr
    )
