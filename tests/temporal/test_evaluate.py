from __future__ import annotations

import numpy as np
import pytest

from diffseg_core.errors import InputError
from temporal.evaluate import evaluate_video_arrays, f_measure, j_measure


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
