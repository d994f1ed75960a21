"""``bench ped2`` inductive headline (engines/bench/ped2_inductive.py) on tiny data: folds hold every
video out once, the rows and checks are reported, and the command writes JSON + Markdown."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from fusewatch.engines.bench import ped2_inductive as PI
from fusewatch.stream.config import Config, load_config
from tests.test_train_eval import synthetic


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg(epochs=2):
    cfg = Config()
    cfg.model.representations = ["a", "b"]
    cfg.model.window = 8
    cfg.train.epochs = epochs
    return cfg


def test_recipes_carry_the_configured_recipe():
    cfg = _cfg()
    rows = PI.recipes(cfg, epochs=5)
    assert [r.name for r in rows] == ["default", "concat", "add", "mtn", "single:a", "single:b"]
    assert [r.fusion for r in rows[:4]] == ["lego", "concat", "add", "mtn"]
    assert [r.name for r in PI.recipes(cfg, epochs=5, fusions=["concat"])][:2] == ["default", "concat"]
    with pytest.raises(ValueError, match="unknown fusion"):
        PI.recipes(cfg, fusions=["nope"])
    d = rows[0]
    assert d.fusion == "lego" and d.normalize == "zscore" and d.set["train.epochs"] == 5
    assert d.set["model.window"] == 8 and d.set["train.val_fraction"] == 0
    c = d.config(seed=1)
    assert c.train.val_fraction == 0 and c.train.seed == 1 and c.train.normalize == "zscore"
    # a configured validation share reaches every row alike (same selection budget for all rows)
    cfg.train.val_fraction = 0.2
    assert {r.config(seed=0).train.val_fraction for r in PI.recipes(cfg, epochs=5)} == {0.2}


def test_run_inductive_on_synthetic_videos():
    ds = synthetic(6, 3, seed=2)
    rep = PI.run_inductive(ds, "unused", _cfg(), seeds=(0, 1), baseline=False, fusions=["concat", "add"])
    held = [n for f in rep["folds"] for n in f["held"]]
    assert sorted(held) == sorted(v.name for v in ds.videos) and len(rep["folds"]) == 3
    for f in rep["folds"]:  # a fold never trains on what it holds out
        assert not set(f["held"]) & set(f["train"])
    assert set(rep["rows"]) == {"default", "concat", "add", "single:a", "single:b"}
    for r in rep["rows"].values():
        assert len(r["seeds"]) == 2 and 0.0 <= r["summary"]["all"][0] <= 1.0
        assert len(r["summary"]["folds"]) == 3
    assert rep["best_single"] in ("single:a", "single:b")
    c = rep["checks"]
    assert c["default_all"] == rep["rows"]["default"]["summary"]["all"][0]
    assert math.isclose(c["minus_concat"], round(c["default_all"] - rep["rows"]["concat"]["summary"]["all"][0], 4))
    assert set(c["minus_fusions"]) == {"concat", "add"} and c["minus_fusions"]["concat"] == c["minus_concat"]
    assert (
        c["minus_motion_baseline"] is None
        and c["minus_motion_baseline_causal"] is None
        and c["meets_target"] == (c["default_all"] >= 0.97)
    )
    md = PI.format_markdown(rep)
    assert "| default | lego | a+b |" in md and "fold 2" in md and "best single" in md


from fusewatch.stream.paths import shared_data  # noqa: E402

PED2 = shared_data("ped2")


@pytest.mark.skipif(not PED2.is_dir(), reason=f"{PED2} not found")
def test_bench_ped2_inductive_command(tmp_path, capsys):
    """The default protocol of ``bench ped2`` on a tiny Ped2 folder (flow, 1 seed, 2 epochs)."""
    from fusewatch.cli.bench import add_commands
    from tests.test_ped2_stream import _subset_dir

    vdir = _subset_dir(tmp_path / "videos", ("test_02", "train_01", "test_04", "train_08"))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    out_json, out_md = tmp_path / "ind.json", tmp_path / "ind.md"
    args = parser.parse_args(
        [
            "bench",
            "ped2",
            "--videos",
            str(vdir),
            "--work",
            str(tmp_path / "work"),
            "--json",
            str(out_json),
            "--md",
            str(out_md),
            "--seeds",
            "0",
            "--epochs",
            "2",
            "--quiet",
            "--no-stream",
        ]
    )
    cfg = load_config(
        env={}, overrides={"features.extractors": "flow", "model.representations": "flow", "model.window": "8"}
    )
    assert args.protocol == "inductive" and args.handler(args, cfg) == 0
    rep = json.loads(out_json.read_text())["inductive"]
    assert "--no-stream only apply to --protocol transductive/both; ignored" in capsys.readouterr().err
    assert set(rep["rows"]) == {"default", "concat", "add", "mtn"} and rep["epochs"] == 2 and rep["seeds"] == [0]
    assert len(rep["folds"]) == 2 and rep["motion_baseline"]["all"] is not None
    # the causal baseline sees no future frame: a different (like-for-like) reference, same folds
    assert rep["motion_baseline_causal"]["all"] != rep["motion_baseline"]["all"]
    assert len(rep["motion_baseline_causal"]["folds"]) == 2
    assert rep["config"]["normalize"] == "zscore"
    assert "motion_baseline" in out_md.read_text() and "motion_baseline_causal" in out_md.read_text()
