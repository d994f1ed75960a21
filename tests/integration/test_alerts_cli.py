"""`fusewatch alerts` tails the real alert topic: JSON lines, camera filter, malformed records skipped."""
import json
import subprocess
import sys

import pytest

from fusewatch.stream.schema import AlertMessage, Evidence

pytestmark = pytest.mark.kafka


def alert(cam, typ, end):
    return AlertMessage(id=f"id-{cam}", type=typ, camera=cam, score=0.9, peak=0.95, start_clip=3,
                        end_clip=end, start_time=1.7e9, end_time=1.7e9 + 5, model_name="lego",
                        model_version="v1", backend="onnxruntime", evidence=[Evidence("f", 0, end)])


def test_alerts_command_json_and_camera_filter(kafka_bootstrap, make_topic, make_transport, kafka_cfg):
    topic = make_topic("alertscli")
    p = make_transport(kafka_cfg, consume=False)
    for a in (alert("cam-a", "new", 4), alert("cam-b", "new", 5), alert("cam-a", "end", 9)):
        p.produce(topic, a.camera, a.encode())
    p.produce(topic, "cam-a", b"\x00not an alert")
    p.flush(timeout=30)
    r = subprocess.run([sys.executable, "-m", "fusewatch", "--transport", "kafka", "--bootstrap", kafka_bootstrap,
                        "--set", f"topics.alerts={topic}", "alerts", "--from-beginning", "--json",
                        "--camera", "cam-a", "--timeout", "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [(x["camera"], x["type"], x["end_clip"]) for x in rows] == [("cam-a", "new", 4), ("cam-a", "end", 9)]
    assert rows[0]["evidence"] == [{"topic": "f", "partition": 0, "offset": 4}]
    assert "skipping malformed alert" in r.stderr


def test_alerts_command_needs_kafka():
    r = subprocess.run([sys.executable, "-m", "fusewatch", "alerts"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--transport kafka" in r.stderr and "Traceback" not in r.stderr
