"""ModelMeta: one typed, frozen object built by the checkpoint loader and the ONNX metadata reader,
whose dict form is the on-disk one; and the absent-representation rule, defined once."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from fusewatch.engines.export.onnx import export_onnx, read_onnx_meta
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.fusion.presence import fill_absent, present_flags
from fusewatch.engines.training.checkpoint import load_model, model_meta, read_checkpoint, save_checkpoint
from fusewatch.stream.config import ModelConfig

DIMS = {"a": 5, "b": 3}


@pytest.fixture(scope="module")
def lego():
    return build_model(ModelConfig(window=6, representations=["a", "b"], node_dim=2), DIMS).eval()


def test_checkpoint_meta_is_typed_and_round_trips(lego, tmp_path):
    th = {"on": 0.7, "off": 0.6, "normal_clips": 9}
    written = save_checkpoint(
        lego, tmp_path / "m.pt", {"epoch": 2, "alert_thresholds": th, "extractor_versions": {"a": "v1"}}
    )
    _, meta = load_model(tmp_path / "m.pt")
    assert isinstance(meta, ModelMeta)
    assert (meta.fusion, meta.representations, meta.window, meta.node_dim) == ("lego", ("a", "b"), 6, 2)
    assert meta.dims == DIMS and meta.model_version == written["model_version"]
    assert meta.alert_thresholds == th and meta.extractor_versions == {"a": "v1"}
    assert meta.path == str(tmp_path / "m.pt") and meta.extra["epoch"] == 2
    d = meta.to_dict()
    assert ModelMeta.from_dict(d).to_dict() == d == dict(meta)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.window = 3  # type: ignore[misc]
    # the stored form is the plain metadata that was written (no ModelMeta inside)
    assert read_checkpoint(tmp_path / "m.pt")["meta"] == written


def test_model_meta_without_extras_has_no_optional_keys(lego):
    d = model_meta(lego).to_dict()
    assert not {"alert_thresholds", "extractor_versions", "form", "inputs", "path"} & set(d)
    assert d["representations"] == ["a", "b"] and d["config"]["window"] == 6


def test_onnx_meta_is_typed_and_props_unchanged(lego, tmp_path):
    p = export_onnx(lego, model_meta(lego, {"alert_thresholds": {"on": 0.5, "off": 0.4}}), tmp_path / "m.onnx")
    meta = read_onnx_meta(p)
    assert isinstance(meta, ModelMeta)
    assert (meta.form, meta.window, meta.order_p, meta.order_q, meta.node_dim) == ("graphs", 6, 2, 2, 2)
    assert meta.inputs == ("R", "mask", "present", "U") and meta.alert_thresholds == {"on": 0.5, "off": 0.4}
    assert meta["N"] == 6 and meta["P"] == 2 and meta["form"] == "graphs"  # the flat form as before
    keys = [e.key for e in onnx.load(str(p)).metadata_props]
    assert keys == [
        "producer",
        "format_version",
        "form",
        "fusion",
        "N",
        "P",
        "Q",
        "expansion",
        "softplus",
        "proj_dim",
        "node_dim",
        "representations",
        "dims",
        "model_version",
        "inputs",
        "config",
        "build_kwargs",
        "extractor_versions",
        "alert_thresholds",
        "node_encoders",
    ]
    assert ModelMeta.from_dict(meta.to_dict()).to_dict() == meta.to_dict()


def test_from_dict_needs_the_shape_fields():
    with pytest.raises(ValueError):
        ModelMeta.from_dict({"fusion": "lego"})
    with pytest.raises(ValueError):
        ModelMeta.from_dict({"representations": ["a", "c"], "dims": {"a": 1}, "window": 4})


def test_absent_representation_rule():
    x = np.ones((2, 3), np.float32)
    assert present_flags({"a": x, "b": None}, ["a", "b", "c"]).tolist() == [1.0, 0.0, 0.0]
    vals, flags = fill_absent({"a": x}, ["b", "a"], lambda n: f"zeros:{n}")
    assert vals[0] == "zeros:b" and vals[1] is x and flags.tolist() == [0.0, 1.0]
