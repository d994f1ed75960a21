"""Frame-level metrics: the UCF-Crime ROC fixture, clip→frame expansion, pooling."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fusewatch.engines.data.ground_truth import ucf_segment_ranges
from fusewatch.engines.evaluation import metrics as M
from fusewatch.stream.paths import shared_data  # noqa: E402

SHARED = shared_data("ucf_c3d_sample")
MAT = SHARED / "6_C3D_Final_L1L2.mat"


@pytest.mark.skipif(not MAT.exists(), reason=f"{MAT} not available (../shared missing)")
def test_trapezoid_auc_reproduces_ucf_crime_fixture():
    from scipy.io import loadmat

    m = loadmat(MAT)
    x, y = m["X"].ravel(), m["Y"].ravel()
    auc = M.trapezoid_auc(x, y)
    assert abs(auc - 0.75411735) < 1e-6
    assert abs(auc - float(m["AUC"].ravel()[0])) < 1e-6
    # direction of the stored curve does not matter
    assert abs(M.trapezoid_auc(x[::-1], y[::-1]) - auc) < 1e-12


def test_trapezoid_auc_basic_and_errors():
    assert M.trapezoid_auc([0, 1], [0, 1]) == pytest.approx(0.5)
    assert M.trapezoid_auc([0, 0, 1], [0, 1, 1]) == pytest.approx(1.0)
    # unsorted points are sorted by fpr (ties: increasing tpr)
    assert M.trapezoid_auc([1, 0, 0], [1, 1, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.trapezoid_auc([0, 1], [0])
    with pytest.raises(ValueError):
        M.trapezoid_auc([0], [0])


def test_expand_to_frames_gaps_overlaps_and_tail():
    # clips cover 2-3, 4-5, 9; frames 0-1 take clip 0, 6-7 nearest (clip 1, tie → earlier), 8 → clip 2,
    # 10-11 (tail) → clip 2
    f = M.expand_to_frames([1, 2, 3], [(2, 3), (4, 5), (9, 9)], 12)
    assert f.tolist() == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    # overlapping clips are averaged
    f = M.expand_to_frames([1, 2], [(0, 3), (2, 5)], 7)
    assert f.tolist() == [1, 1, 1.5, 1.5, 2, 2, 2]
    # ranges past the end are clipped; no overlap with the frames at all → nearest clip
    assert M.expand_to_frames([5, 7], [(0, 99), (100, 200)], 4).tolist() == [5, 5, 5, 5]
    assert M.expand_to_frames([1, 2], [(20, 30), (40, 50)], 3).tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        M.expand_to_frames([1, 2], [(0, 1)], 4)


def test_pooled_metrics_equal_sklearn_on_expanded_frames():
    rng = np.random.default_rng(0)
    items, ys, ss = [], [], []
    for n in (50, 64, 33):
        T = n // 8 + (n % 8 > 0)
        s = rng.random(T)
        ranges = [(8 * t, 8 * t + 7) for t in range(T)]
        gt = (rng.random(n) > 0.7).astype(np.uint8)
        items.append((s, ranges, gt))
        ys.append(gt)
        ss.append(np.repeat(s, 8)[:n])
    r = M.pooled_frame_metrics(items, with_curve=True)
    y, s = np.concatenate(ys), np.concatenate(ss)
    assert r["frames"] == 147 and r["videos"] == 3 and r["abnormal_frames"] == int(y.sum())
    assert r["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert r["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert M.trapezoid_auc(r["fpr"], r["tpr"]) == pytest.approx(r["auc"], abs=1e-9)


def test_undefined_metrics_are_nan_and_json_none():
    r = M.pooled_frame_metrics([(np.array([0.1, 0.9]), [(0, 1), (2, 3)], np.zeros(4))])
    assert np.isnan(r["auc"]) and np.isnan(r["ap"])
    assert M.nan_to_none(r["auc"]) is None and M.nan_to_none(0.25) == 0.25


def test_frame_gt_from_spans_one_based_and_clipped():
    gt = M.frame_gt_from_spans(10, [(2, 4), (9, 12), (-1, -1)])
    assert np.flatnonzero(gt).tolist() == [1, 2, 3, 8, 9]


@pytest.mark.parametrize("n", [33, 347, 1748, 3630])
def test_ucf_segments_cover_every_frame(n):
    r = ucf_segment_ranges(n)
    assert len(r) == 32 and r[0][0] == 0 and r[-1][1] == n - 1
    for (_s0, e0), (s1, _) in zip(r, r[1:]):
        assert s1 == e0 + 1  # contiguous, no gaps, no overlap (n >= 33)
    b = np.floor(np.linspace(1, n, 33) + 0.5).astype(int)  # MATLAB round(linspace(1, n, 33))
    assert [s + 1 for s, _ in r] == b[:-1].tolist()
