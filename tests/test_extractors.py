"""Extractor interface, flow, audio and user-ONNX extractors, on real decoded frames."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fusewatch.stream.config import FeaturesConfig, ModelConfig
from fusewatch.stream.extractors import Extractor, build_extractor, build_extractors
from fusewatch.stream.extractors.audio import AudioExtractor, hz_to_mel, mel_filterbank, mel_to_hz
from fusewatch.stream.extractors.base import pool_frames, subsample_indices
from fusewatch.stream.extractors.flow import DIM as FLOW_DIM
from fusewatch.stream.extractors.flow import N_MAG, N_ORI, FlowExtractor
from fusewatch.stream.paths import shared_data  # noqa: E402

SHARED = shared_data()


def _video_frames(path: Path, n: int, start: int = 0, step: int = 1) -> list[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder (../shared) is absent")
    av = pytest.importorskip("av")
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= start and (i - start) % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def vtest():
    return _video_frames(SHARED / "cctv" / "vtest.avi", 16, start=100)


@pytest.fixture(scope="module")
def ped2():
    return _video_frames(SHARED / "ped2" / "train_01.mp4", 16, start=20)


# ------------------------------------------------------------------------------------------------
# helpers and registry


def test_pool_and_subsample():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_array_equal(pool_frames(x, "mean"), [4.5, 5.5, 6.5])
    np.testing.assert_array_equal(pool_frames(x, "meanmax"), [4.5, 5.5, 6.5, 9, 10, 11])
    assert subsample_indices(16, 4) == [2, 6, 10, 14]
    assert subsample_indices(16, 0) == list(range(16))
    assert subsample_indices(5, 8) == list(range(5))
    with pytest.raises(ValueError, match="features.pool"):
        pool_frames(x, "max")


def test_unknown_and_duplicate_extractors(tmp_path):
    with pytest.raises(ValueError, match="unknown extractor 'resnet'"):
        build_extractor("resnet", FeaturesConfig())
    cfg = FeaturesConfig(extractors=["flow", "flow"], model_dir=str(tmp_path))
    with pytest.raises(ValueError, match="two extractors produce the representation 'flow'"):
        build_extractors(cfg)


def test_build_lightweight_extractors_from_full_config(tmp_path):
    from fusewatch.stream.config import Config

    cfg = Config()
    cfg.features.extractors = ["flow", "audio"]
    exs = build_extractors(cfg)  # a whole Config is accepted too
    assert [(e.name, e.dim, e.needs_audio) for e in exs] == [("flow", FLOW_DIM, False), ("audio", 80, True)]
    assert all(isinstance(e, Extractor) and e.version for e in exs)


def test_bad_frames_are_rejected():
    ex = FlowExtractor()
    with pytest.raises(ValueError, match="empty clip"):
        ex.extract([], None, None)
    with pytest.raises(ValueError, match="uint8 RGB"):
        ex.extract([np.zeros((8, 8), np.uint8)], None, None)


# ------------------------------------------------------------------------------------------------
# flow


def test_flow_static_vs_moving(vtest, ped2):
    ex = FlowExtractor()
    assert ex.dim == FLOW_DIM == 80
    static = ex.extract([vtest[0]] * 4, None, None)
    moving = ex.extract(vtest, None, None)
    moving_ped2 = ex.extract(ped2, None, None)
    for v in (static, moving, moving_ped2):
        assert v.shape == (FLOW_DIM,) and v.dtype == np.float32 and np.isfinite(v).all()
        np.testing.assert_allclose(v[:N_MAG].sum(), 1.0, rtol=1e-5)  # magnitude histogram
        assert v[N_MAG : N_MAG + N_ORI].sum() <= 1.0 + 1e-5
    # identical frames: (almost) all pixels in the lowest magnitude bin, no moving pixels
    stats = N_MAG + N_ORI + 32
    print(
        "static mean/max/moving:",
        static[stats],
        static[stats + 2],
        static[stats + 4],
        "| vtest:",
        moving[stats],
        moving[stats + 2],
        moving[stats + 4],
        "| ped2:",
        moving_ped2[stats],
        moving_ped2[stats + 2],
        moving_ped2[stats + 4],
    )
    assert static[0] > 0.99 and static[stats + 4] < 1e-3 and static[stats] < 0.01
    for m in (moving, moving_ped2):
        assert m[stats] > 5 * max(static[stats], 1e-3)  # mean magnitude
        assert m[stats + 2] > 0.3  # 99th-percentile magnitude: log1p(px) of walking people
        assert m[stats + 4] > 1e-3  # some pixels move more than 0.5 px
        assert np.linalg.norm(m - static) > 0.1
    # a single frame: the static-scene vector
    one = ex.extract(vtest[:1], None, None)
    assert one[0] == 1.0 and np.count_nonzero(one) == 1


def test_flow_is_fast(vtest):
    ex = FlowExtractor()
    ex.extract(vtest[:2], None, None)
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        ex.extract(vtest, None, None)
        ts.append(time.perf_counter() - t)
    per_pair_ms = 1000 * float(np.median(ts)) / (len(vtest) - 1)
    print(f"flow: {1000 * np.median(ts):.1f} ms per 16-frame 768x576 clip, {per_pair_ms:.2f} ms per pair")
    assert per_pair_ms < 50  # ~3 ms on an idle core; generous for loaded shared CI machines


def test_flow_direction(ped2):
    """A frame shifted right by 4 px at 160 px (3 px at the default 120-px flow scale) shows up in
    the +x orientation bins."""
    import cv2

    f = cv2.resize(ped2[0], (160, 107), interpolation=cv2.INTER_AREA)
    shifted = np.roll(f, 4, axis=1)
    v = FlowExtractor().extract([f, shifted], None, None)
    ori = v[N_MAG : N_MAG + N_ORI]
    assert ori[0] + ori[-1] > 0.5  # bins around 0° (pointing right)
    fx = v[N_MAG + N_ORI + 32 + 5]
    assert 2.0 < fx < 6.0


# ------------------------------------------------------------------------------------------------
# audio


def test_audio_sine_vs_noise_and_absent():
    ex = AudioExtractor()
    assert ex.needs_audio and ex.dim == 80
    rate = 16000
    t = np.arange(int(1.6 * rate)) / rate
    sine = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, len(t)).astype(np.float32)
    a, b = ex.extract([], sine, rate), ex.extract([], noise, rate)
    for v in (a, b):
        assert v.shape == (80,) and v.dtype == np.float32 and np.isfinite(v).all()
    assert np.linalg.norm(a - b) > 10
    # the sine's energy sits in the band around 1 kHz; white noise rises with band width
    centres = mel_to_hz(np.linspace(hz_to_mel(20), hz_to_mel(8000), 42))[1:-1]
    assert abs(int(np.argmax(a[:40])) - int(np.argmin(np.abs(centres - 1000)))) <= 1
    assert mel_filterbank(rate, 512).shape == (40, 257)
    assert np.ptp(b[:40]) < np.ptp(a[:40])
    assert ex.extract([], None, None) is None
    assert ex.extract([], np.zeros(0, np.float32), rate) is None
    # silence: finite (log floor), a tiny clip shorter than one window still works
    assert np.isfinite(ex.extract([], np.zeros(rate, np.float32), rate)).all()
    assert ex.extract([], sine[:100], rate).shape == (80,)
    # other sample rates, stereo input
    assert np.isfinite(ex.extract([], np.stack([noise, noise], 1), 44100)).all()
    assert np.isfinite(ex.extract([], noise[:8000], 8000)).all()
    with pytest.raises(ValueError, match="audio_rate"):
        ex.extract([], sine, None)


# ------------------------------------------------------------------------------------------------
# onnx:<path>


def _export_small(path: Path, layout: str = "NCHW", size: int = 64, fixed_batch: bool = False, out_rank: int = 4):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    from fusewatch.stream.extractors.onnx_cache import export_torch

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 12, 3, 2, 1))

        def forward(self, x):
            if layout == "NHWC":
                x = x.permute(0, 3, 1, 2)
            y = self.conv(x)
            if out_rank == 2:
                return y.mean((2, 3))
            return y.permute(0, 2, 3, 1) if layout == "NHWC" else y

    shape = (1, 3, size, size) if layout == "NCHW" else (1, size, size, 3)
    ex = torch.zeros(*shape)
    if fixed_batch:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Small().eval(),
                (ex,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["img"],
                output_names=["out"],
            )
    else:
        export_torch(Small(), ex, path, input_name="img", output_name="out")
    return Small().eval()


@pytest.mark.parametrize(
    "layout,fixed,rank", [("NCHW", False, 4), ("NHWC", False, 4), ("NCHW", True, 4), ("NCHW", False, 2)]
)
def test_user_onnx_model(tmp_path, ped2, layout, fixed, rank):
    torch = pytest.importorskip("torch")
    path = tmp_path / "tiny.onnx"
    model = _export_small(path, layout, 64, fixed, rank)
    cfg = FeaturesConfig(extractors=[f"onnx:{path}"], onnx_input_size=64, onnx_layout=layout, model_dir=str(tmp_path))
    (ex,) = build_extractors(cfg)
    assert ex.name == "onnx:tiny" and ex.dim == 12 and ex.version.startswith("onnx-1-sha")
    v = ex.extract(ped2[:5], None, None)
    assert v.shape == (12,) and v.dtype == np.float32 and np.isfinite(v).all()
    # reference: same preprocessing in numpy, the torch model, spatial then frame mean
    import cv2

    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255
    xs = np.stack(
        [(cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32) - mean) / std for f in ped2[:5]]
    )
    if layout == "NCHW":
        xs = xs.transpose(0, 3, 1, 2)
    with torch.no_grad():
        y = model(torch.from_numpy(np.ascontiguousarray(xs))).numpy()
    if y.ndim == 4:
        y = y.mean((2, 3)) if layout == "NCHW" else y.mean((1, 2))
    np.testing.assert_allclose(v, y.mean(0), rtol=1e-4, atol=1e-5)

    cfg.pool = "meanmax"
    (ex2,) = build_extractors(cfg)
    assert ex2.dim == 24 and ex2.extract(ped2[:3], None, None).shape == (24,)


def test_user_onnx_errors(tmp_path):
    cfg = FeaturesConfig(onnx_input_size=64, model_dir=str(tmp_path))
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ValueError, match="file not found") as e:
        build_extractor(f"onnx:{missing}", cfg)
    assert "\n" not in str(e.value) and str(missing) in str(e.value)
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model\n" * 10)
    with pytest.raises(ValueError, match="not an ONNX model") as e:
        build_extractor(f"onnx:{junk}", cfg)
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not an ONNX model"):
        build_extractor(f"onnx:{empty}", cfg)
    with pytest.raises(ValueError, match="needs a file path"):
        build_extractor("onnx:", cfg)
    # declared input size disagrees with features.onnx_input_size
    path = tmp_path / "fixed.onnx"
    _export_small(path, "NCHW", 64, fixed_batch=True)
    cfg.onnx_input_size = 96
    with pytest.raises(ValueError, match="onnx_input_size: 96 does not match") as e:
        build_extractor(f"onnx:{path}", cfg)
    assert "\n" not in str(e.value)
    cfg.onnx_input_size, cfg.onnx_layout = 64, "NHWC"
    with pytest.raises(ValueError, match="channels"):
        build_extractor(f"onnx:{path}", cfg)


# ------------------------------------------------------------------------------------------------
# all default extractors on one real clip


def test_default_extractors_on_vtest_clip(tmp_path, vtest):
    """The default set is the default model's representations; every built-in clip-level extractor
    (both backbones, flow, audio) runs on one real clip."""
    assert FeaturesConfig().extractors == ["mobilenetv2", "flow"] == list(ModelConfig().representations)
    cfg = FeaturesConfig(model_dir=str(tmp_path), extractors=["mobilenetv2", "effnet_lite0", "flow", "audio"])
    exs = build_extractors(cfg)
    assert [e.name for e in exs] == ["mobilenetv2", "effnet_lite0", "flow", "audio"]
    rate = 16000
    audio = np.random.default_rng(1).normal(0, 0.05, int(1.6 * rate)).astype(np.float32)
    timings = {}
    for e in exs:
        e.extract(vtest[:2], audio, rate)  # warm-up
        ts = []
        for _ in range(2):
            t = time.perf_counter()
            v = e.extract(vtest, audio, rate)
            ts.append(time.perf_counter() - t)
        timings[e.name] = 1000 * float(np.median(ts))
        assert v.shape == (e.dim,) and v.dtype == np.float32 and np.isfinite(v).all()
        assert e.extract(vtest, None, None) is None if e.needs_audio else True
    print(
        "ms per 16-frame 768x576 clip:",
        {k: round(v, 1) for k, v in timings.items()},
        "total",
        round(sum(timings.values()), 1),
    )
