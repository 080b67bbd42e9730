"""The benchmarks' families: the stack family that stands for a microscopist's classical
nuclei pipeline (its figures are only worth something if it segments nuclei), and how a
family's raw maps are scored for the per-frame / per-slice oracle."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from volume_linking_bench import nuclei_watershed  # noqa: E402


def two_touching_nuclei(depth: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Two bright balls of radius 12 whose sections touch, in a dim stack whose top and
    bottom slices show only their faint blur; and their labels."""
    z, y, x = np.mgrid[:depth, :64, :96].astype(np.float32)
    lab = np.zeros(z.shape, np.int32)
    for i, cx in enumerate((34.0, 58.0)):
        lab[((y - 32) ** 2 + (x - cx) ** 2 + (3 * (z - depth // 2)) ** 2) <= 12 ** 2] = i + 1
    grey = np.where(lab > 0, 200, 20).astype(np.uint8)
    grey[[0, -1]] = np.where(lab[[1, -2]] > 0, 45, 20)  # out-of-focus light, no nucleus
    lab[[0, -1]] = 0
    return grey, lab


def test_touching_nuclei_are_split_and_the_empty_slices_stay_empty():
    grey, lab = two_touching_nuclei()
    out = nuclei_watershed(8)(grey)
    assert out.shape == grey.shape and out.dtype == np.int32
    assert not out[[0, -1]].any()  # one threshold for the stack: no blur segmented above and below
    assert ((out > 0) == (lab > 0)).mean() > 0.97  # 0 is the background
    for z in range(2, 7):  # the middle slices: one segment per nucleus, not one for both
        left, right = (np.bincount(out[z][lab[z] == i]).argmax() for i in (1, 2))
        assert left > 0 and right > 0 and left != right


def test_the_oracle_of_raw_maps_counts_segment_0_unless_it_is_the_background():
    from families import as_ids
    from temporal.evaluate import evaluate_video_arrays
    from volume.evaluate import volume_dice

    gt = np.zeros((2, 20, 30), np.int64)
    gt[:, 5:15, 5:15] = 1
    seg = np.where(gt == 1, 0, 1).astype(np.int32)  # the object is segment 0, as shuffled labels make it
    # read as ids, segment 0 is "no segment": the oracle could not match the object at all
    assert evaluate_video_arrays(list(seg), list(gt)).oracle_JF < 0.5
    assert evaluate_video_arrays(as_ids(list(seg)), list(gt)).oracle_JF == pytest.approx(1.0)
    assert volume_dice(as_ids(seg), gt).mean_oracle_dice == pytest.approx(1.0)
    # maps whose 0 is the background (a nuclei pipeline's) are scored as they are
    masks = gt.astype(np.int32)
    assert as_ids(masks, 0) is masks
    assert volume_dice(as_ids(masks, 0), gt).mean_oracle_dice == pytest.approx(1.0)
    with pytest.raises(ValueError, match="background"):
        as_ids(masks, 3)


def test_the_object_masks_family_leaves_the_ground_empty():
    from families import BACKGROUND, objects

    gt = np.zeros((120, 160), np.int64)
    gt[30:80, 40:100] = 1
    gt[90:110, 120:150] = 2
    out = objects(np.zeros((120, 160, 3), np.uint8), gt, np.random.default_rng(0))
    assert BACKGROUND["objects"] == 0 and out.dtype == np.int32
    assert (out[gt == 0] == 0).mean() > 0.9  # the ground is background, not segments
    assert (out[gt > 0] > 0).mean() > 0.9  # the objects are masks
    ids = np.unique(out[out > 0])
    assert ids.min() == 1 and len(ids) == ids.max()  # numbered from 1


def test_the_ceiling_joins_the_pieces_of_an_object_but_undoes_no_merge():
    from families import ceiling
    from temporal.evaluate import evaluate_video_arrays
    from volume.evaluate import volume_dice

    gt = np.zeros((3, 20, 40), np.int64)
    gt[:, 4:16, 2:18] = 1
    gt[:, 4:16, 22:38] = 2
    seg = np.full(gt.shape, 7, np.int32)  # the ground is segment 7
    for t in range(3):  # object 1 in two pieces whose cut moves; object 2 merged with a strip of ground
        seg[t, 4:16, 2:18] = 0
        seg[t, 4:16, 2:6 + 4 * t] = 3
        seg[t, 2:16, 22:38] = 5
    ids = ceiling(seg, gt)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == gt.shape
    assert (ids[gt == 1] == 1).all()  # the pieces joined, segment 0 among them
    assert (ids[:, 2:4, 22:38] == 2).all()  # the merged ground stays in object 2's segment
    assert (ids[:, 0, :] == 0).all()  # the ground's own segment: no object
    oracle = evaluate_video_arrays(as_ids_list(seg), list(gt)).oracle_JF
    assert evaluate_video_arrays(ceiling(list(seg), list(gt)), list(gt)).JF > oracle + 0.1
    assert volume_dice(ids, gt, oracle=False).mean_dice > volume_dice(seg + 1, gt).mean_oracle_dice
    # a thin object is the smaller share of the one segment that holds it: that segment is
    # still its best IoU (0.4), which giving every segment to its majority would miss (0)
    thin = np.zeros((1, 10, 10), np.int64)
    thin[0, :, :4] = 1
    assert (ceiling(np.zeros((1, 10, 10), np.int32), thin) == 1).all()
    # a segment two objects want goes to the one it lies in more: 30 of its pixels are A's, 20 B's
    two = np.zeros((1, 10, 10), np.int64)
    two[0, :, :6], two[0, :, 6:] = 1, 2
    cut = np.zeros((1, 10, 10), np.int32)
    cut[0, :5, :6], cut[0, :5, 6:], cut[0, 5:] = 0, 1, 2
    assert (ceiling(cut, two)[0, 5:] == 1).all()
    # over a volume (pooled), a segment that would lower the object's Dice over all slices
    # stays out though it is the object's best on its own slice
    seg2 = np.zeros((2, 10, 10), np.int32)
    seg2[0, :, 5:] = 1  # slice 0: segment 0 is exactly the object
    # slice 1: one segment, of whose 100 pixels the object is 30
    obj = np.zeros((2, 10, 10), np.int64)
    obj[0, :, :5] = 1
    obj[1, :3, :] = 1
    per_frame, pooled = ceiling(seg2, obj), ceiling(seg2, obj, pooled=True)
    assert (per_frame[1, :3] == 1).all() and (pooled[1] == 0).all() and (pooled[0, :, :5] == 1).all()
    assert volume_dice(pooled, obj, oracle=False).mean_dice > volume_dice(per_frame, obj, oracle=False).mean_dice
    # with 0 as "no segment", what no segment covers is never given an object
    masks = np.where(gt > 0, seg + 1, 0)
    masks[0, 4:16, 2:18] = 0
    assert (ceiling(masks, gt, background=0)[0, 4:16, 2:18] == 0).all()


def as_ids_list(seg: np.ndarray) -> list:
    from families import as_ids

    return as_ids(list(seg))


def test_the_ceiling_report_names_the_cells_no_joining_linker_can_reach(capsys):
    from paired import print_ceilings

    rows = [dict(item="a", family="f", method="engine", oracle=0.5, ceiling=0.9, of_ceiling=0.8),
            dict(item="b", family="quickshift", method="engine", oracle=0.8, ceiling=0.72, of_ceiling=0.5),
            dict(item="b", family="quickshift", method="iou", oracle=0.8, ceiling=0.72, of_ceiling=0.4)]
    print_ceilings(rows, ["engine", "iou"], ["quickshift"], target=0.97, unit="J&F")
    out = capsys.readouterr().out
    assert "engine                       0.800 (0.800) | 0.500" in out
    assert "iou                          nan (nan) | 0.400" in out
    assert "1 of 2: b/quickshift (0.90)" in out
