"""CNN backbones: the weights load right (ImageNet photos classified, BN statistics consistent),
the exported ONNX graphs match torch on real frames, and the ONNX cache is reused."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from fusewatch.stream.config import FeaturesConfig  # noqa: E402
from fusewatch.stream.extractors import build_extractors  # noqa: E402
from fusewatch.stream.extractors.backbone_onnx import onnx_filename  # noqa: E402
from fusewatch.stream.extractors.backbones import preprocess  # noqa: E402
from fusewatch.stream.extractors.cnn_models import BACKBONES, load_torch_model, weights_sha256  # noqa: E402
from fusewatch.stream.paths import shared_data  # noqa: E402

SHARED = shared_data()
CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUP_CLASSES = {504, 968}  # coffee mug, cup


def _video_frames(path: Path, n: int, step: int = 1) -> list[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder (../shared) is absent")
    av = pytest.importorskip("av")
    out = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % step == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == n:
                break
    return out


def _photos() -> list[np.ndarray]:
    out = []
    for name in (
        "chelsea",
        "coffee",
        "astronaut",
        "rocket",
        "immunohistochemistry",
        "hubble_deep_field",
        "camera",
        "coins",
        "moon",
        "clock",
        "retina",
        "brick",
        "grass",
        "gravel",
        "colorwheel",
        "logo",
        "page",
        "text",
    ):
        im = np.asarray(getattr(skdata, name)())
        if im.dtype == bool:
            im = im.astype(np.uint8) * 255
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(im[..., :3]).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def built(model_dir):
    """The first build_extractors call of this module: exports both backbones into model_dir."""
    exs = build_extractors(FeaturesConfig(extractors=["mobilenetv2", "effnet_lite0"], model_dir=str(model_dir)))
    assert all(e.exported and e.onnx_path.is_file() for e in exs)
    return exs


@pytest.fixture(scope="module")
def sessions(built):
    return {e.name: e.session for e in built}


@pytest.fixture(scope="module")
def effnet():
    return load_torch_model("effnet_lite0", classifier=True)


def _top5(logits: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-logits)[:5]]


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_effnet_lite0_classifies_imagenet_photos(effnet, sessions, mode):
    imgs = [skdata.chelsea(), skdata.coffee()]
    x = preprocess(imgs, "effnet_lite0", mode)
    with torch.no_grad():
        logits = effnet(torch.from_numpy(x)).numpy()
    # the exported feature graph + the torch head classify the same way
    feats = sessions["effnet_lite0"].run(None, {"input": x})[0]
    w, b = effnet._fc.weight.detach().numpy(), effnet._fc.bias.detach().numpy()
    onnx_logits = feats @ w.T + b
    for lg in (logits, onnx_logits):
        cat, cup = _top5(lg[0]), _top5(lg[1])
        print(f"effnet_lite0 {mode}: chelsea top-5 {cat}, coffee top-5 {cup}")
        assert CAT_CLASSES & set(cat), cat
        assert CUP_CLASSES & set(cup), cup
        assert cat[0] in CAT_CLASSES


def test_mobilenetv2_weights_are_headless():
    """deep-sort ships MobileNetV2 without its ImageNet classifier: no top-5 test is possible
    for it; the BN-statistics and cross-model tests below prove that load instead."""
    sd = torch.load(BACKBONES["mobilenetv2"].weights(), map_location="cpu", weights_only=True)
    assert len(sd) == 312 and not any(k.startswith("classifier") for k in sd)
    assert tuple(sd["features.18.0.weight"].shape) == (1280, 320, 1, 1)


def _bn_discrepancy(model, x) -> float:
    """Mean over all BN layers and channels of |batch mean − running mean| / running std of the
    BN inputs: small only when every layer sees the activation statistics it was trained on."""
    vals, hooks = [], []

    def hook(m, inp, out):
        a = inp[0].double()
        vals.append(
            ((a.mean((0, 2, 3)) - m.running_mean.double()).abs() / (m.running_var.double() + m.eps).sqrt())
            .mean()
            .item()
        )

    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return float(np.mean(vals))


@pytest.mark.parametrize("name", ["mobilenetv2", "effnet_lite0"])
def test_batchnorm_statistics_match_real_images(name):
    imgs = _photos()[:6]
    x = torch.from_numpy(preprocess(imgs, name))
    loaded = load_torch_model(name, classifier=False)
    good = _bn_discrepancy(loaded, x)
    torch.manual_seed(0)
    rand = BACKBONES[name].build(0).eval()
    sd = rand.state_dict()
    for k, v in loaded.state_dict().items():
        if "running_" in k:
            sd[k] = v  # random conv weights, trained BN statistics
    rand.load_state_dict(sd)
    bad = _bn_discrepancy(rand, x)
    print(f"{name}: BN discrepancy loaded {good:.3f}, random weights {bad:.3f}")
    assert good < 0.3 and bad > 3 * good
    if name == "mobilenetv2":  # architecture check: dropping the residuals breaks the statistics
        for mod in loaded.modules():
            if hasattr(mod, "use_res"):
                mod.use_res = False
        broken = _bn_discrepancy(loaded, x)
        print(f"mobilenetv2: BN discrepancy without residual connections {broken:.3f}")
        assert broken > 1.5 * good


def _sim(f: np.ndarray) -> np.ndarray:
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return (f @ f.T)[np.triu_indices(len(f), 1)]


def test_mobilenetv2_agrees_with_effnet_on_image_similarity(sessions):
    """Representational similarity: two ImageNet nets rank image pairs alike; a random one doesn't."""
    from scipy.stats import spearmanr

    imgs = _photos()
    fe = sessions["effnet_lite0"].run(None, {"input": preprocess(imgs, "effnet_lite0")})[0]
    x = preprocess(imgs, "mobilenetv2")
    fm = sessions["mobilenetv2"].run(None, {"input": x})[0]
    torch.manual_seed(0)
    rand = BACKBONES["mobilenetv2"].build(0).eval()
    with torch.no_grad():
        fr = rand.forward_features(torch.from_numpy(x)).numpy()
    rho = spearmanr(_sim(fe), _sim(fm)).correlation
    rho_rand = spearmanr(_sim(fe), _sim(fr)).correlation
    print(f"similarity-rank correlation with effnet_lite0: mobilenetv2 {rho:.3f}, random {rho_rand:.3f}")
    assert rho > 0.4 and rho > rho_rand + 0.2


@pytest.mark.parametrize("name", ["mobilenetv2", "effnet_lite0"])
def test_onnx_matches_torch_on_real_frames(name, sessions):
    frames = _video_frames(SHARED / "ped2" / "train_01.mp4", 4, step=10) + _video_frames(
        SHARED / "cctv" / "vtest.avi", 4, step=25
    )
    x = preprocess(frames, name)
    assert x.shape == (8, 3, 224, 224) and x.dtype == np.float32
    with torch.no_grad():
        ref = load_torch_model(name, classifier=False).forward_features(torch.from_numpy(x)).numpy()
    out = sessions[name].run(None, {"input": x})[0]
    diff = float(np.abs(out - ref).max())
    print(f"{name}: ONNX vs torch max abs diff {diff:.3g} (feature scale {np.abs(ref).max():.3g})")
    assert out.shape == (8, 1280)
    assert diff < 1e-3


def test_build_extractors_exports_once_and_reuses(model_dir, built):
    files = sorted(model_dir.glob("*.onnx"))
    assert [f.name for f in files] == sorted(
        onnx_filename(n, weights_sha256(BACKBONES[n].weights())) for n in ("mobilenetv2", "effnet_lite0")
    )
    assert {e.onnx_path for e in built} == set(files)
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    time.sleep(0.01)
    cfg = FeaturesConfig(extractors=["mobilenetv2", "effnet_lite0"], model_dir=str(model_dir))
    second = build_extractors(cfg)
    assert not any(e.exported for e in second)
    assert {e.onnx_path for e in second} == set(files)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert not list(model_dir.glob(".*tmp"))  # no temporary files left behind
    for e in second:
        sha = weights_sha256(BACKBONES[e.name].weights())
        assert e.dim == 1280 and sha[:12] in e.version


def test_damaged_cache_file_is_re_exported(tmp_path):
    path = tmp_path / onnx_filename("mobilenetv2", weights_sha256(BACKBONES["mobilenetv2"].weights()))
    path.write_bytes(b"not a model")  # e.g. a truncated file from a full disk
    (ex,) = build_extractors(FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(tmp_path)))
    assert ex.exported and ex.onnx_path == path and path.stat().st_size > 1_000_000


def test_clip_pooling_and_frame_subset(sessions, model_dir):
    frames = _video_frames(SHARED / "cctv" / "vtest.avi", 16)
    (mean_ex,) = build_extractors(
        FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir), cnn_frames=0)
    )  # every frame of the clip
    per = mean_ex.per_frame(frames)
    v = mean_ex.extract(frames, None, None)
    assert v.shape == (1280,) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_allclose(v, per.mean(0), rtol=1e-5, atol=1e-6)

    cfg = FeaturesConfig(
        extractors=["effnet_lite0", "mobilenetv2"], pool="meanmax", model_dir=str(model_dir), cnn_frames=0
    )
    eff, mnv2 = build_extractors(cfg)
    assert eff.dim == mnv2.dim == 2560
    mm = mnv2.extract(frames, None, None)
    assert mm.shape == (2560,)
    np.testing.assert_allclose(mm[:1280], v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mm[1280:], per.max(0), rtol=1e-5, atol=1e-6)
    assert eff.extract(frames, None, None).shape == (2560,)

    cfg = FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir), cnn_frames=4)
    (sub,) = build_extractors(cfg)
    np.testing.assert_allclose(sub.extract(frames, None, None), per[[2, 6, 10, 14]].mean(0), rtol=1e-5, atol=1e-6)


def test_spatial_max_pooling_matches_torch_and_caches_separately(sessions, model_dir):
    """``features.cnn_spatial = "max"``: global max of the last feature map, exported to its own
    ONNX file (the avg file stays valid), equal to torch, ≥ the average channel by channel, and
    named in the extractor version so features of the two poolings are never mixed."""
    frames = _video_frames(SHARED / "ped2" / "test_02.mp4", 3, step=40) + _video_frames(
        SHARED / "cctv" / "vtest.avi", 3, step=25
    )
    (avg_ex,) = build_extractors(FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir)))
    (max_ex,) = build_extractors(
        FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir), cnn_spatial="max")
    )
    assert max_ex.exported and max_ex.onnx_path != avg_ex.onnx_path
    assert max_ex.onnx_path.name == onnx_filename(
        "mobilenetv2", weights_sha256(BACKBONES["mobilenetv2"].weights()), spatial="max"
    )
    assert max_ex.version == avg_ex.version + "-smax" and max_ex.dim == avg_ex.dim == 1280
    got = max_ex.per_frame(frames)
    with torch.no_grad():
        fmap = (
            load_torch_model("mobilenetv2", classifier=False)
            .feature_map(torch.from_numpy(preprocess(frames, "mobilenetv2")))
            .numpy()
        )
    assert fmap.shape == (len(frames), 1280, 7, 7)
    np.testing.assert_allclose(got, fmap.max((2, 3)), atol=1e-3)
    avg = avg_ex.per_frame(frames)
    assert (got >= avg - 1e-4).all() and float((got - avg).mean()) > 0.1


def test_smaller_input_size_is_its_own_export_and_version(sessions, model_dir):
    """``features.cnn_input_size = 160``: the backbone is exported at that size into its own file,
    sees 160×160 inputs (equal to torch on the same input), and the size is in the extractor
    version so features of two input sizes are never mixed."""
    frames = _video_frames(SHARED / "ped2" / "test_02.mp4", 2, step=60)
    (ex224,) = build_extractors(FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir)))
    (ex160,) = build_extractors(
        FeaturesConfig(extractors=["mobilenetv2"], model_dir=str(model_dir), cnn_input_size=160)
    )
    assert ex160.onnx_path != ex224.onnx_path and "-160" in ex160.onnx_path.name
    assert ex160.version == ex224.version + "-i160" and ex160.dim == 1280
    x = ex160.prepare(frames)
    assert x.shape == (2, 3, 160, 160)
    with torch.no_grad():
        ref = load_torch_model("mobilenetv2", classifier=False)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ex160.per_frame(frames), ref, atol=1e-3)
    assert not np.allclose(ex160.per_frame(frames), ex224.per_frame(frames), atol=1e-2)
