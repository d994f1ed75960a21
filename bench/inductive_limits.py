"""What limits inductive Ped2 detection: learning curves and an oracle-label experiment.

    PYTHONPATH=. python bench/inductive_limits.py lcurve --fusion lego [--set train.motion_prior=none] [--k 1,2,3,5]
    PYTHONPATH=. python bench/inductive_limits.py oracle --fusion lego
    (--features DIR: an extraction of ../shared/data/ped2 with the shipped extractors, default
    out/feats/e2_i224_w120; --json OUT appends the result)

Both keep the inductive protocol of ``fusewatch bench ped2`` (the same leave-one-anomalous-video-out
folds, held-out videos and scoring; z-scored features; last epoch; seeds 0, 1, 2) and change only
what each fold trains on:

* ``lcurve``: each fold's training set subsampled to ``k`` of its 5 anomalous videos and the same
  share of its normal videos (at least one), drawn per seed (``1000 + seed``); ``k = 5`` is the
  full training set, i.e. the headline figure. Pooled frame AUC over all 18 held-out videos.
* ``oracle``: each anomalous *training* video is split into two bags by its frame labels — the clips
  touching abnormal frames (label 1) and the others (label 0) — so weak supervision gets the true
  clip labels as bag labels. Held-out videos are untouched (no label of theirs is used). It asks
  whether label noise inside the anomalous training videos is what holds the model back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusewatch.engines.data import FeatureDataset, load_dataset  # noqa: E402
from fusewatch.engines.evaluation import inductive as I  # noqa: E402

REPS = ["mobilenetv2", "flow"]
SEEDS = (0, 1, 2)


def subsample_folds(ds, base, k: int, seed: int) -> list[dict]:
    """``base`` folds with each training set cut to ``k`` anomalous videos (+ the same share of normal ones)."""
    label = {v.name: v.video_label for v in ds.videos}
    rng = np.random.default_rng(1000 + seed)
    out = []
    for f in base:
        abn = [n for n in f["train"] if label[n] == 1]
        nor = [n for n in f["train"] if label[n] == 0]
        ka = min(k, len(abn))
        kn = max(1, round(len(nor) * ka / len(abn)))
        pick = set(rng.choice(abn, ka, replace=False)) | set(rng.choice(nor, kn, replace=False))
        out.append({"held": f["held"], "train": [n for n in f["train"] if n in pick]})
    return out


def oracle_split(ds, base) -> tuple[FeatureDataset, list[dict]]:
    """Dataset + folds where every anomalous training video becomes an abnormal and a normal bag."""
    extra, split = [], {}
    for v in ds.videos:
        if v.video_label != 1:
            continue
        r = v.clip_ranges()
        ab = np.array([v.frame_gt[s : e + 1].any() for s, e in r])
        names = []
        for lab, mask, suf in ((1, ab, "#abnormal"), (0, ~ab, "#normal")):
            idx = np.flatnonzero(mask)
            if len(idx) < 2:
                continue
            nv = dataclasses.replace(
                v,
                name=v.name + suf,
                feats={k: a[idx] for k, a in v.feats.items()},
                clip_to_frames=[r[i] for i in idx],
                video_label=lab,
                frame_gt=None,
                n_frames=None,
            )
            extra.append(nv)
            names.append(nv.name)
        split[v.name] = names
    full = FeatureDataset(ds.videos + extra, dict(ds.dims), ds.layout, ds.root, dict(ds.info))
    folds = [{"held": f["held"], "train": [m for n in f["train"] for m in split.get(n, [n])]} for f in base]
    return full, folds


def _line(tag: str, s: dict) -> str:
    within = " ".join(f"{n}:{x[0]:.3f}" for n, x in s["within"].items() if not np.isnan(x[0]))
    return (
        f"{tag}: all {s['all'][0]:.4f} ± {s['all'][1]:.4f}  anomalous {s['anomalous'][0]:.4f} ± "
        f"{s['anomalous'][1]:.4f}  within {within}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("lcurve", "oracle"))
    ap.add_argument("--fusion", default="lego")
    ap.add_argument("--k", default="1,2,3,5", help="lcurve: anomalous training videos per fold")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--features", default=str(ROOT / "out" / "feats" / "e2_i224_w120"))
    ap.add_argument("--json", default=None, metavar="OUT", help="append {mode, fusion, set, results} here")
    a = ap.parse_args(argv)
    over = dict(kv.split("=", 1) for kv in a.set)
    ds = load_dataset(a.features)
    base = I.loao_folds(ds.videos)
    rec = I.Recipe(a.mode, REPS, fusion=a.fusion, normalize="zscore", set=over)
    results: dict[str, dict] = {}
    if a.mode == "lcurve":
        for k in [int(x) for x in a.k.split(",")]:
            metrics = [
                I.run_recipe(ds, rec, [s], subsample_folds(ds, base, k, s))["seeds"][0]["metrics"] for s in SEEDS
            ]
            results[f"k={k}"] = I.summarize(metrics)
            print(_line(f"{a.fusion} {over or ''} k={k}", results[f"k={k}"]), flush=True)
    else:
        full, folds = oracle_split(ds, base)
        res = I.run_recipe(full, rec, list(SEEDS), folds)
        results["oracle"] = I.summarize([r["metrics"] for r in res["seeds"]])
        print(_line(f"{a.fusion} {over or ''} oracle bags", results["oracle"]), flush=True)
    if a.json:
        p = Path(a.json)
        old = json.loads(p.read_text()) if p.exists() else []
        old.append({"mode": a.mode, "fusion": a.fusion, "set": over, "results": results})
        p.write_text(json.dumps(old, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
