from __future__ import annotations

import numpy as np
import pytest

from diffseg_core.errors import InputError
from temporal.evaluate import db_statistics, evaluate_video_arrays, f_measure, j_measure


def square(h, w, y0, x0, s, v=1):
    a = np.zeros((h, w), np.int32)
    a[y0:y0 + s, x0:x0 + s] = v
    return a


def test_j_and_f_hand_cases():
    a = square(10, 10, 0, 0, 4)
    b = square(10, 10, 0, 2, 4)  # overlap 4x2 = 8, union 24
    assert j_measure(a, b) == pytest.approx(8 / 24)
    assert j_measure(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    assert f_measure(a, a) == 1.0
    assert f_measure(a, np.zeros_like(a)) == 0.0
    big = np.zeros((100, 100), bool)
    big[20:60, 20:60] = True
    shifted = np.roll(big, 1, axis=1)  # within the 2 px tolerance (0.008 * diagonal = 1.13 -> 2)
    assert f_measure(big, shifted) == 1.0
    far = np.roll(big, 10, axis=1)
    assert f_measure(big, far) < 0.6


def test_perfect_tracking_scores_one():
    gt = [square(20, 20, 2 + t, 3, 6, 1) + square(20, 20, 12, 10 + t, 5, 2) for t in range(5)]
    pred = [np.where(g == 1, 7, np.where(g == 2, 3, 0)) for g in gt]
    s = evaluate_video_arrays(pred, gt)
    assert s.J == 1 and s.F == 1 and s.JF == 1 and s.oracle_JF == 1
    assert s.id_switches == 0 and s.n_objects == 2 and s.n_tracks == 2
    assert {o["object"]: o["track"] for o in s.per_object} == {1: 7, 2: 3}


def test_id_switch_costs_tracked_score_not_oracle():
    gt = [square(20, 20, 5, 5, 8) for _ in range(4)]
    pred = [g * 7 for g in gt]
    pred[2] = gt[2] * 9  # frame 2 labelled with another id, frame 3 back to 7
    s = evaluate_video_arrays(pred, gt)
    # one assignment per sequence: track 7 is right on 3 of 4 frames
    assert s.J == pytest.approx(0.75) and s.F == pytest.approx(0.75)
    assert s.oracle_J == 1 and s.oracle_F == 1
    assert s.id_switches == 2  # 7 -> 9 -> 7
    assert s.id_switches_per_100 == pytest.approx(100 * 2 / 4)
    assert s.ratio == pytest.approx(0.75)


def test_absent_object_and_missing_track():
    gt = [square(10, 10, 0, 0, 4), np.zeros((10, 10), np.int32)]
    pred = [square(10, 10, 0, 0, 4, 5), np.zeros((10, 10), np.int32)]
    s = evaluate_video_arrays(pred, gt)
    assert s.J == 1.0  # frame 1: both empty counts 1
    s2 = evaluate_video_arrays([np.zeros((10, 10), np.int32)] * 2, gt)
    assert s2.J == 0.0 and s2.oracle_J == pytest.approx(0.5)
    with pytest.raises(InputError):
        evaluate_video_arrays([np.zeros((10, 10), np.int32)], [np.zeros((10, 10), np.int32)])


def _write_dir(d, maps):
    from diffseg_core.io import save_labels_png

    d.mkdir()
    for t, m in enumerate(maps):
        save_labels_png(d / f"{t:05d}.png", m)


def test_dirs_refuse_prediction_of_other_aspect_ratio(tmp_path):
    from temporal.evaluate import evaluate_video_dirs

    gt = [square(64, 64, 8, 8, 20), square(64, 64, 10, 8, 20)]
    pred = [square(64, 64, 8, 8, 20), square(16, 40, 2, 2, 5)]  # frame 00001 is the bad one
    _write_dir(tmp_path / "gt", gt)
    _write_dir(tmp_path / "pred", pred)
    with pytest.raises(InputError) as e:
        evaluate_video_dirs(tmp_path / "pred", tmp_path / "gt")
    msg = str(e.value)
    assert "00001" in msg and "16x40" in msg and "64x64" in msg


def test_dirs_rescale_uniformly_downscaled_prediction(tmp_path):
    from temporal.evaluate import evaluate_video_dirs, same_aspect

    gt = [square(64, 96, 16, 32, 32)]
    _write_dir(tmp_path / "gt", gt)
    _write_dir(tmp_path / "pred", [square(32, 48, 8, 16, 16)])  # --max-side 48 of the same frame
    assert evaluate_video_dirs(tmp_path / "pred", tmp_path / "gt").J == 1.0
    assert same_aspect((360, 640), (480, 854)) and not same_aspect((16, 40), (64, 64))


# ----------------------------------------------------------------------------- worked out by hand
def _disk_reference(r: int) -> np.ndarray:
    """The structuring element of davis2017-evaluation (``skimage.morphology.disk``)."""
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def _f_reference(pred: np.ndarray, gt: np.ndarray, r: int) -> float:
    """DAVIS ``f_measure`` written from its definition, on scipy's binary dilation."""
    from scipy.ndimage import binary_dilation

    from temporal.evaluate import boundary_map

    bp, bg = boundary_map(pred), boundary_map(gt)
    if not bp.any() and not bg.any():
        return 1.0
    if not bp.any() or not bg.any():
        return 0.0
    k = _disk_reference(r)
    precision = (bp & binary_dilation(bg, k)).sum() / bp.sum()
    recall = (bg & binary_dilation(bp, k)).sum() / bg.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def test_boundary_map_of_a_square_by_hand():
    from temporal.evaluate import boundary_map

    m = square(6, 6, 1, 1, 3)  # rows/cols 1..3
    expected = np.array([[1, 1, 1, 1, 0, 0],   # row above: outside pixels whose S/SE is inside
                         [1, 0, 0, 1, 0, 0],   # left column outside, right column inside
                         [1, 0, 0, 1, 0, 0],
                         [1, 1, 1, 1, 0, 0],   # bottom row inside
                         [0, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(boundary_map(m), expected)


def test_f_of_shifted_stripes_by_hand():
    # 100x100 frames: tolerance ceil(0.008 * 141.4) = 2 px. A vertical stripe's boundary is
    # two full columns: x0 - 1 (outside) and x1 - 1 (inside).
    gt = np.zeros((100, 100), bool)
    gt[:, 20:40] = True                    # boundary columns 19 and 39
    pred = np.zeros_like(gt)
    pred[:, 22:45] = True                  # boundary columns 21 (2 px from 19) and 44 (5 px from 39)
    assert f_measure(pred, gt) == pytest.approx(0.5)  # precision 1/2, recall 1/2
    pred3 = np.zeros_like(gt)
    pred3[:, 23:43] = True                 # both columns 3 px away: nothing matches
    assert f_measure(pred3, gt) == 0.0
    assert f_measure(pred3, gt, bound_th=3) == 1.0  # a tolerance in pixels


def test_f_uses_the_davis_disk_not_a_square_ellipse():
    # A boundary pixel displaced by (1, 2) is sqrt(5) = 2.24 px away: outside the radius-2
    # disk. A 1-pixel mask makes the boundary a single point's neighbourhood.
    gt = np.zeros((100, 100), bool)
    gt[50, 50] = True
    pred = np.roll(np.roll(gt, 1, 0), 2, 1)
    assert f_measure(pred, gt) == pytest.approx(_f_reference(pred, gt, 2))
    assert f_measure(pred, gt) < 1.0


@pytest.mark.parametrize("seed", range(6))
def test_f_equals_the_reference_definition_on_random_blobs(seed):
    import cv2

    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(40, 90)), int(rng.integers(40, 120)))

    def blob() -> np.ndarray:
        m = np.zeros(shape, np.uint8)
        for _ in range(3):
            c = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
            cv2.ellipse(m, c, (int(rng.integers(3, 15)), int(rng.integers(3, 15))),
                        float(rng.uniform(0, 180)), 0, 360, 1, -1)
        return m.astype(bool)

    pred, gt = blob(), blob()
    for th in (0.008, 0.02, 3):
        r = int(th) if th >= 1 else int(np.ceil(th * np.hypot(*shape)))
        assert f_measure(pred, gt, th) == pytest.approx(_f_reference(pred, gt, r), abs=1e-12)


def _hand_video():
    """Five 10x10 frames, two objects, four tracks (see the test for the worked-out scores)."""
    gt, pred = [], []
    for t in range(5):
        g = np.zeros((10, 10), np.int32)
        p = np.zeros((10, 10), np.int32)
        g[0:4, 0:4] = 1                                 # object 1: 16 px, every frame
        if t < 4:
            g[6:10, 6:10] = 2                           # object 2: 16 px, gone in frame 4
        if t < 2:
            p[0:4, 2:6] = 5                             # track 5 shifted 2 px: 8 / 24 = 1/3
        else:
            p[0:4, 0:4] = 5                             # then exact
        if t == 0:
            p[6:10, 5:10] = 7                           # 20 px over 16: 16 / 20 = 0.8
        elif t == 1:
            p[6:10, 6] = 9                              # a sliver: 4 / 16 = 0.25
        elif t < 4:
            p[6:10, 6:10] = 8                           # exact
        gt.append(g)
        pred.append(p)
    return pred, gt


def test_tracked_and_oracle_scores_worked_out_by_hand():
    pred, gt = _hand_video()
    s = evaluate_video_arrays(pred, gt)
    per = {o["object"]: o for o in s.per_object}
    # object 1 <- track 5: J = (1/3 + 1/3 + 1 + 1 + 1) / 5 = 11/15
    # object 2 <- track 8: J = (0 + 0 + 1 + 1 + 1 [both absent in frame 4]) / 5 = 3/5
    assert per[1]["track"] == 5 and per[2]["track"] == 8
    assert per[1]["J"] == pytest.approx(11 / 15, abs=1e-6)
    assert per[2]["J"] == pytest.approx(3 / 5, abs=1e-6)
    assert s.J == pytest.approx((11 / 15 + 3 / 5) / 2)
    # track 8's F: exact in frames 2-3, both absent in frame 4, absent in 0-1: 3/5
    assert per[2]["F"] == pytest.approx(3 / 5, abs=1e-6)
    # oracle: every frame's best match; object 2: (0.8 + 0.25 + 1 + 1 + 1) / 5 = 0.81
    assert per[1]["oracle_J"] == pytest.approx(11 / 15, abs=1e-6)
    assert per[2]["oracle_J"] == pytest.approx(0.81, abs=1e-6)
    assert s.oracle_J == pytest.approx((11 / 15 + 0.81) / 2)
    # switches: object 2 is 7 in frame 0, the 0.25 sliver of 9 in frame 1 does not count
    # (IoU < 0.5), 8 in frames 2-3: one switch. Object 1's 1/3 frames do not count either.
    assert per[1]["id_switches"] == 0 and per[2]["id_switches"] == 1
    assert s.id_switches == 1
    assert s.id_switches_per_100 == pytest.approx(100 / 9)  # 5 + 4 frames present
    assert s.n_tracks == 4 and s.n_objects == 2


def test_recall_and_decay_as_davis_computes_them():
    # four overlapping bins of 8 frames: edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7
    m, r, d = db_statistics(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]))
    assert m == pytest.approx(0.55) and r == 0.5  # 0.5 itself is not above 0.5
    assert d == pytest.approx((0.9 + 0.8 + 0.7) / 3 - (0.4 + 0.3 + 0.2) / 3)
    # each bin holds its end frame: first bin 0.1, 0.9, 0.5 and last 0.5, 0.9, 0.1 -> no decay
    assert db_statistics(np.array([0.1, 0.9, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1]))[2] == pytest.approx(0.0)
    pred, gt = _hand_video()
    s = evaluate_video_arrays(pred, gt)
    per = {o["object"]: o for o in s.per_object}
    # 5 frames: bins [0:2], [1:3], [2:4], [3:5]. Object 1's J: 1/3, 1/3, 1, 1, 1; object 2's
    # J and F: 0, 0, 1, 1, 1 (track 8 absent, then exact, then both absent)
    assert per[1]["J_recall"] == pytest.approx(0.6) and per[1]["J_decay"] == pytest.approx(1 / 3 - 1, abs=1e-6)
    assert per[2]["J_recall"] == pytest.approx(0.6) and per[2]["J_decay"] == pytest.approx(-1.0)
    assert per[2]["F_recall"] == pytest.approx(0.6) and per[2]["F_decay"] == pytest.approx(-1.0)
    assert s.J_recall == pytest.approx(0.6) and s.J_decay == pytest.approx((1 / 3 - 1 - 1) / 2, abs=1e-6)
    assert s.to_dict()["F_decay"] == pytest.approx(s.F_decay, abs=1e-6)


def test_void_pixels_count_nowhere():
    gt = square(20, 20, 4, 4, 8)
    gt[4:12, 12:16] = 255  # an unlabelled band beside the object (DAVIS void)
    pred = square(20, 20, 4, 4, 8, 3)
    pred[4:12, 12:16] = 3  # the prediction spills over the void band: not an error
    s = evaluate_video_arrays([pred] * 3, [gt] * 3)
    assert s.n_objects == 1 and s.J == 1.0 and s.F == 1.0 and s.J_recall == 1.0 and s.J_decay == 0.0
    plain = evaluate_video_arrays([pred] * 3, [gt] * 3, void=None)  # 255 as an object: another picture
    assert plain.n_objects == 2 and plain.J < 1.0
    missed = np.where(gt == 255, 0, pred)
    missed[4:12, 4:6] = 0  # a quarter of the object lost: J 0.75 whatever the void band holds
    assert evaluate_video_arrays([missed], [gt]).J == pytest.approx(0.75)
