"""``worker/replay --model M`` (and the demo): the worker computes the model's representations, with
the extractor versions checked at start-up (one-line error, exit 2, on a mismatch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving.model_features import features_for_model, read_model_meta
from fusewatch.engines.training.checkpoint import save_checkpoint
from fusewatch.errors import ConfigError
from fusewatch.stream.config import Config, ModelConfig
from fusewatch.stream.extractors import build_extractor

REPS = ["flow", "flow_grid"]


def _versions(cfg: Config) -> dict[str, str]:
    return {r: str(build_extractor(r, cfg.features).version) for r in REPS}


def _model(path, reps=REPS, versions=None, **meta):
    torch.manual_seed(0)
    dims = {"flow": 80, "flow_grid": 128, "rgb": 8}
    m = build_model(ModelConfig(window=4, representations=list(reps)), {r: dims[r] for r in reps})
    m.feature_norm = {r: (np.zeros(dims[r], np.float32), np.ones(dims[r], np.float32)) for r in reps}
    save_checkpoint(m, path, {"extractor_versions": versions or {}, **meta})
    return path


def test_worker_takes_representations_from_the_model(tmp_path):
    cfg = Config()
    assert cfg.features.extractors != REPS
    p = _model(tmp_path / "m.pt", versions=_versions(cfg))
    assert list(read_model_meta(p).representations) == REPS
    out = features_for_model(cfg, p)
    assert out.features.extractors == REPS and cfg.features.extractors != REPS  # a copy


def test_extractor_version_mismatch_is_a_startup_error(tmp_path):
    cfg = Config()
    v = _versions(cfg)
    v["flow"] = "flow-0-old-settings"
    p = _model(tmp_path / "m.pt", versions=v)
    with pytest.raises(ConfigError, match="'flow' was trained on extractor version 'flow-0-old-settings'") as e:
        features_for_model(cfg, p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["pt", "onnx"])
def test_clip_settings_mismatch_is_a_startup_error(tmp_path, fmt):
    """A model trained on clips every 4 frames scores other windows at stride 16: refused at start."""
    from fusewatch.engines.export.onnx import export_onnx
    from fusewatch.engines.training.checkpoint import load_model

    cfg = Config()
    p = _model(tmp_path / "m.pt", versions=_versions(cfg), clip_len=16, clip_stride=4)
    if fmt == "onnx":
        m, meta = load_model(p)
        p = export_onnx(m, meta, tmp_path / "m.onnx", form="graphs")
    with pytest.raises(ConfigError, match=r"trained on clips.clip_stride = 4, this configuration makes 16") as e:
        features_for_model(cfg, p)
    assert "--set clips.clip_stride=4" in str(e.value) and "\n" not in str(e.value)
    cfg.clips.clip_stride = 4
    assert features_for_model(cfg, p).features.extractors == REPS


def test_unknown_representation_is_a_startup_error(tmp_path):
    p = _model(tmp_path / "m.pt", reps=["rgb"])
    with pytest.raises(ConfigError, match="needs representation 'rgb'"):
        features_for_model(Config(), p)


def test_onnx_model_is_read_the_same_way(tmp_path):
    from fusewatch.engines.export.onnx import export_onnx
    from fusewatch.engines.training.checkpoint import load_model

    cfg = Config()
    v = _versions(cfg)
    m, meta = load_model(_model(tmp_path / "m.pt", versions=v))
    p = export_onnx(m, meta, tmp_path / "m.onnx", form="graphs")
    assert features_for_model(cfg, p).features.extractors == REPS
    assert dict(read_model_meta(p).extractor_versions) == v


def test_replay_and_worker_commands_use_the_model(tmp_path, monkeypatch, capsys):
    """CLI: ``replay --model`` hands the model's extractors to the replay; a mismatching model is a
    one-line error with exit status 2 before anything is decoded; ``worker --model`` likewise."""
    import fusewatch.stream.replay as R
    from fusewatch.cli import main

    seen = {}

    class _Res:
        cameras, clips_published, clips_lost, wall_s = {}, 0, 0, 0.0

        def lost_summary(self):
            return ""

    def fake_replay(files, cfg, **kw):
        seen["extractors"] = list(cfg.features.extractors)
        return _Res()

    monkeypatch.setattr(R, "replay", fake_replay)
    good = _model(tmp_path / "good.pt", versions=_versions(Config()))
    assert main(["replay", "--model", str(good), "--speed", "max", "x.mp4"]) == 0
    assert seen["extractors"] == REPS
    bad = _model(tmp_path / "bad.pt", versions={"flow": "flow-0-old", "flow_grid": "x"})
    seen.clear()
    assert main(["replay", "--model", str(bad), "x.mp4"]) == 2
    assert not seen
    # (log lines of other libraries may share stderr in-process; the error is one line of ours)
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("fusewatch:")]
    assert len(err) == 1 and "flow-0-old" in err[0]
    assert main(["worker", "--camera", "c", "--source", "x.mp4", "--model", str(bad)]) == 2
