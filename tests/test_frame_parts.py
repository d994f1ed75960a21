"""Per-frame extraction (``worker.per_frame``): parts computed as frames arrive give the same clip
features as whole-clip extraction, for overlapping, gapped and sub-sampled windows, across
discontinuities, in the one-camera Worker and the MultiWorker; incomplete parts fall back."""

from __future__ import annotations

import av
import numpy as np
import pytest

from fusewatch.stream.clips import ClipBuilder, Frame
from fusewatch.stream.config import load_config
from fusewatch.stream.extractors import build_extractors
from fusewatch.stream.frame_parts import FrameParts, is_incremental
from fusewatch.stream.multi_worker import MultiWorker
from fusewatch.stream.paths import shared_data
from fusewatch.stream.schema import decode_features
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.testing import collect_features

PED2 = shared_data("ped2")
pytestmark = pytest.mark.skipif(not PED2.is_dir(), reason=f"shared data not found at {PED2}")


def _cfg(**over):
    base = {"features.extractors": "mobilenetv2,flow,audio", "features.cnn_frames": "0"}
    base.update(over)
    return load_config(env={}, overrides=list(base.items()))


@pytest.fixture(scope="module")
def frames():
    out = []
    with av.open(str(PED2 / "test_04.mp4")) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) == 60:
                break
    return out


@pytest.fixture(scope="module")
def extractors():
    return {k: build_extractors(_cfg(**{"features.cnn_frames": k}).features) for k in ("0", "5")}


@pytest.mark.parametrize("clip_len,stride,cnn_frames", [(16, 16, "0"), (16, 4, "0"), (8, 11, "5"), (16, 4, "5")])
def test_parts_give_the_whole_clip_features(frames, extractors, clip_len, stride, cnn_frames):
    ex = extractors[cnn_frames]
    assert [e.name for e in ex if is_incremental(e)] == ["mobilenetv2", "flow"]  # audio is whole-clip
    builder, parts = ClipBuilder(clip_len, stride), FrameParts(ex, clip_len, stride)
    clips = []
    for i, img in enumerate(frames):
        if i == 37:  # a discontinuity (reconnect): the window restarts, no pair spans it
            builder.reset()
            parts.reset()
        parts.add(img, builder.next_position())
        clips += [(c, parts.outcomes(c)) for c in builder.push(Frame(i, i / 10, i / 10, img))]
    assert len(clips) >= 3
    for clip, out in clips:
        assert set(out) == {"mobilenetv2", "flow"}
        for e in ex[:2]:
            name, arr, err, seconds = out[e.name]
            assert err is None and seconds > 0
            ref = e.extract(clip.frames)
            if e.name == "flow":
                assert arr.tobytes() == ref.tobytes()
            else:
                np.testing.assert_allclose(arr, ref, rtol=1e-4, atol=2e-5)
    assert parts.fallbacks == 0
    if cnn_frames != "0" and stride >= clip_len:  # only the pooled positions ran the CNN
        cached = [en for en in parts._cache.values()]
        assert sum("mobilenetv2" in en.parts for en in cached) < len(cached)


def test_missing_or_failed_parts_fall_back_or_report(frames, extractors):
    ex = extractors["0"][:2]
    builder, parts = ClipBuilder(8, 8), FrameParts(ex, 8, 8)
    clips = []
    for i, img in enumerate(frames[:24]):
        if i not in (3, 12):  # frames the parts never saw: those clips fall back to whole-clip extraction
            parts.add(img, builder.next_position())
        clips += builder.push(Frame(i, i / 10, i / 10, img))
    assert parts.outcomes(clips[0]) == {} and parts.outcomes(clips[1]) == {}
    assert set(parts.outcomes(clips[2])) == {"mobilenetv2", "flow"} and parts.fallbacks == 4

    class Broken:
        name, dim, version = "broken", 3, "b1"

        def frame_positions(self, n):
            return None

        def frame_part(self, image):
            raise RuntimeError("bad frame")

        def combine(self, parts, pairs):
            return np.zeros(3, np.float32)

    bp, b = FrameParts([Broken()], 4, 4), ClipBuilder(4, 4)
    for i, img in enumerate(frames[:4]):
        bp.add(img, b.next_position())
        got = b.push(Frame(i, i / 10, i / 10, img))
    (name, arr, err, _) = bp.outcomes(got[0])["broken"]
    assert arr is None and isinstance(err, RuntimeError)  # reported as the extractor's failure


@pytest.mark.parametrize("multi", [False, True])
def test_workers_publish_the_same_features_per_frame_or_per_clip(extractors, multi):
    """Worker and MultiWorker with ``worker.per_frame`` on publish what whole-clip extraction
    publishes (stride 4: overlapping clips share their frames' parts)."""
    on, off = _cfg(**{"clips.clip_stride": "4"}), _cfg(**{"clips.clip_stride": "4", "worker.per_frame": "false"})
    ex = extractors["0"][:2]  # mobilenetv2, flow: both per frame
    uri = str(PED2 / "test_02.mp4")
    ref = collect_features(uri, ex, off, camera="a")
    if multi:
        bus = InProcessBus()
        mw = MultiWorker(
            on, [("a", uri)], transport=BusTransport(bus), extractors=ex, wall_anchor=0.0, serve_metrics=False
        )
        assert mw.run().errors == {}
        assert mw.pool.clips == 0  # every clip finished on the camera thread, none went to the pool
        got = sorted(
            (
                decode_features(r.value)
                for p in bus.partitions_for(on.topics.features)
                for r in bus.read((on.topics.features, p), 0, 1 << 30)
            ),
            key=lambda m: m.clip,
        )
    else:
        got = collect_features(uri, ex, on, camera="a")
    assert len(got) == len(ref) > 20
    for a, b in zip(got, ref):
        assert (a.clip, a.frame_start, a.frame_end) == (b.clip, b.frame_start, b.frame_end)
        ra, rb = {r.name: r for r in a.reps}, {r.name: r for r in b.reps}
        assert list(ra) == list(rb)
        assert ra["flow"].array.tobytes() == rb["flow"].array.tobytes()
        np.testing.assert_allclose(ra["mobilenetv2"].array, rb["mobilenetv2"].array, rtol=1e-4, atol=2e-5)
