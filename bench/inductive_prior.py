"""Issue 12, phase 2: the local-motion prior re-scored on the saved held-out clip scores of the
inductive recipes (no retraining): clip score × the clip's local motion taken from its own features.

    PYTHONPATH=. python bench/inductive_prior.py [recipe ...]

Needs the stride-4 features of bench/inductive.py (``out/feats/ped2-l16s4``) and its
``bench/results/inductive_<recipe>.json``. Motion statistics (px, expm1 of log1p features):
``flow_max`` (flow's 4×4 grid, largest per-field cell mean), ``flow_mean`` (flow's 4×4 clip-mean grid,
the shipped prior), ``grid_top`` (flow_grid's top cells, largest per-field mean), ``grid_mean``
(flow_grid's 6×9 clip-mean grid).
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "bench")
import inductive as I

from fusewatch.engines.evaluation.inductive import fold_metrics, frame_scores, restride, summarize

ds = I.load_bench_dataset(Path("out/feats/ped2-l16s4"))
d16 = restride(ds, 16)
by = d16.by_name()
gts = {v.name: v.frame_gt for v in d16.videos}


def motion(v, kind):
    f = v.feats
    if kind == "flow_max":
        return np.expm1(f["flow"][:, 44:60].max(1))
    if kind == "flow_mean":
        return np.expm1(f["flow"][:, 28:44].max(1))
    if kind == "grid_top":
        x = f["flow_grid"]
        return np.expm1(np.max(np.stack([x[:, k * 17 + 1] for k in range(4)], 1), 1))
    if kind == "grid_mean":
        return np.expm1(f["flow_grid"][:, 74:128].max(1))
    raise KeyError(kind)


kinds = ["flow_max", "flow_mean", "grid_top", "grid_mean"]
res = {}
base = I.json.load(open("bench/results/inductive_mnv2_flow_lego.json"))
folds = base["folds"]
for k in kinds:
    fr = {n: frame_scores(by[n], motion(by[n], k)) for n in gts}
    m = fold_metrics(fr, gts, folds)
    print(f"motion alone {k}: all {m['all']:.4f} anom {m['anomalous']:.4f} t12 {m['within'].get('test_12'):.3f}")
recipes = sys.argv[1:] or [
    "mnv2_flow_lego",
    "mnv2_flow_concat",
    "x_mnv2_flow_flow_grid_lego",
    "x_mnv2_flow_flow_grid_concat",
    "flow_grid_mnv2_lego",
    "flow_grid_mnv2_concat",
    "flow_lego",
    "flow_concat",
]
for r in recipes:
    R = json.load(open(f"bench/results/inductive_{r}.json"))
    if R["recipe"]["stride"] != 16:
        continue
    for k in ["none"] + kinds:
        ms = []
        for sd in R["seeds"]:
            fr = {}
            for n, s in sd["clip"].items():
                s = np.asarray(s, np.float64)
                if k != "none":
                    s = s * motion(by[n], k)[: len(s)]
                fr[n] = frame_scores(by[n], s)
            ms.append(fold_metrics(fr, gts, R["folds"]))
        sm = summarize(ms)
        print(
            f"{r:32s} x {k:9s}: all {sm['all'][0]:.4f}±{sm['all'][1]:.4f} anom {sm['anomalous'][0]:.4f} t12 {sm['within']['test_12'][0]:.3f}"
        )
