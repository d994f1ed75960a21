"""Wire contract: round trips and every validation path of the decoder."""

import msgpack
import numpy as np
import pytest

from fusewatch.stream.alert_schema import AlertMessage, decode_alert
from fusewatch.stream.schema import (
    Evidence,
    FeatureMessage,
    Representation,
    SchemaError,
    dead_letter_payload,
    decode_dead_letter,
    decode_features,
)


def feature_msg(**kw):
    base = dict(
        camera="cam-1",
        clip=7,
        pts_start=11.2,
        pts_end=12.7,
        wall_start=1.7e9 + 11.2,
        wall_end=1.7e9 + 12.7,
        frame_start=112,
        frame_end=127,
        produced=1.7e9 + 13,
        reps=[
            Representation("mobilenetv2", np.arange(1280, dtype=np.float32) / 1280, "mnv2", "1"),
            Representation("flow", np.linspace(0, 1, 96).astype(np.float64), "flow", "2"),
        ],
    )
    base.update(kw)
    return FeatureMessage(**base)


def test_feature_round_trip_preserves_arrays_and_dtypes():
    m = feature_msg()
    out = decode_features(m.encode())
    assert out.camera == "cam-1" and out.clip == 7 and out.frame_end == 127
    assert out.rep("mobilenetv2").dtype == np.float32
    np.testing.assert_array_equal(out.rep("mobilenetv2"), m.rep("mobilenetv2"))
    np.testing.assert_array_equal(out.rep("flow"), m.rep("flow"))
    assert out.rep("audio") is None


def test_big_endian_arrays_are_sent_little_endian():
    arr = np.arange(8, dtype=">f4")
    out = decode_features(feature_msg(reps=[Representation("x", arr)]).encode())
    assert out.rep("x").dtype.str == "<f4"
    np.testing.assert_array_equal(out.rep("x"), np.arange(8, dtype=np.float32))


def test_alert_round_trip():
    a = AlertMessage(
        id="a1",
        type="new",
        camera="c",
        score=0.9,
        peak=0.95,
        start_clip=3,
        end_clip=5,
        start_time=1.0,
        end_time=2.0,
        model_name="lego",
        model_version="abc",
        backend="onnxruntime",
        evidence=[Evidence("t", 1, 42)],
    )
    b = decode_alert(a.encode())
    assert b == a


def _raw(m: FeatureMessage) -> dict:
    return msgpack.unpackb(m.encode(), raw=False)


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda d: d.update(v=2), "unsupported_version"),
        (lambda d: d.pop("v"), "missing_version"),
        (lambda d: d.update(kind="alert"), "wrong_kind"),
        (lambda d: d.pop("camera"), "missing_field"),
        (lambda d: d.update(clip="7"), "bad_field"),
        (lambda d: d.update(clip=-1), "bad_field"),
        (lambda d: d["reps"][0].update(dtype="<i4"), "bad_dtype"),
        (lambda d: d["reps"][0].update(dtype="|O"), "bad_dtype"),
        (lambda d: d["reps"][0].update(shape=[1281]), "size_mismatch"),
        (lambda d: d["reps"][0].update(shape=[0]), "bad_shape"),
        (lambda d: d["reps"][0].update(data=d["reps"][0]["data"][:-4]), "size_mismatch"),
        (lambda d: d["reps"][0].update(data=np.full(1280, np.nan, np.float32).tobytes()), "non_finite"),
        (lambda d: d.update(pts_start=float("inf")), "non_finite"),
        (lambda d: d.update(reps=[]), "bad_field"),
        (lambda d: d["reps"].append(dict(d["reps"][0])), "duplicate_representation"),
        (lambda d: d.update(pts_end=0.0), "bad_field"),
    ],
)
def test_decoder_rejects_with_reason(mutate, reason):
    d = _raw(feature_msg())
    mutate(d)
    with pytest.raises(SchemaError) as e:
        decode_features(msgpack.packb(d, use_bin_type=True))
    assert e.value.reason == reason


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"", "empty"),
        (b"\xc1\xc1\xc1", "undecodable"),
        (msgpack.packb([1, 2]), "not_a_map"),
        (b"x" * 2_000_000, "too_large"),
    ],
)
def test_garbage_payloads(payload, reason):
    with pytest.raises(SchemaError) as e:
        decode_features(payload)
    assert e.value.reason == reason


def test_pickle_payload_is_not_executed():
    import pickle

    with pytest.raises(SchemaError):
        decode_features(pickle.dumps({"v": 1}))


def test_truncated_message_rejected():
    raw = feature_msg().encode()
    with pytest.raises(SchemaError):
        decode_features(raw[: len(raw) // 2])


def test_dead_letter_payload_keeps_reason_and_origin():
    dl = decode_dead_letter(dead_letter_payload(b"abc", "bad_dtype", "x", "t", 2, 9, b"cam"))
    assert dl["reason"] == "bad_dtype" and dl["partition"] == 2 and dl["offset"] == 9
    assert dl["payload"] == b"abc" and dl["key"] == b"cam"
