"""Slice linking (`volume.api.link_volume`: the engine's `slices` preset): ids consistent
through the volume despite shuffles, splits, merges, growing and ending sections."""
from __future__ import annotations

import numpy as np
import pytest

from temporal.engine import slices
from tests.volume.helpers import shuffle_slices, spheres
from volume.api import _label_slices, link_volume
from volume.types import VolumeConfig


def link(vol: np.ndarray, background: "int | None" = None, gray: "np.ndarray | None" = None, **knobs) -> np.ndarray:
    cfg = VolumeConfig(engine=slices().set(**knobs), background=background, waist_ratio=0.0)
    g = None if gray is None else (lambda ax, i: gray[i])
    return link_volume(vol.shape, 0, _label_slices(vol, 0, background, g), cfg)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are equal up to a one-to-one renaming of ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("seed", range(4))
def test_shuffled_slices_are_linked_exactly(seed) -> None:
    # sections start as tips, grow several-fold, shrink and end; ids shuffled every slice;
    # neighbouring sections overlap by IoU >= 0.25 (`min_iou`) all along
    gt = spheres((14, 32, 36))
    assert same_partition(link(shuffle_slices(gt, seed=seed)), gt)


def test_a_tip_below_min_iou_of_its_next_section_starts_a_new_id() -> None:
    # coarser slices: the core's 6-px tip grows to 25 px (IoU 0.24): below min_iou it is
    # taken for another structure; a lower threshold links it
    gt = spheres((16, 32, 40))
    sh = shuffle_slices(gt, seed=0)
    assert not same_partition(link(sh), gt)
    assert same_partition(link(sh, min_iou=0.2), gt)


def test_growing_sections_need_the_iou_score() -> None:
    # the prediction's foreign cost (the video score) reads a tip growing into its
    # structure as a new object: the same phantom falls apart without min_iou
    gt = spheres((14, 32, 36))
    out = link(shuffle_slices(gt, seed=0), min_iou=0.0)
    assert not same_partition(out, gt)
    assert len(np.unique(out)) > len(np.unique(gt))


def test_background_value_gets_no_id() -> None:
    gt = spheres((12, 30, 30))
    out = link(shuffle_slices(gt, seed=2, keep_zero=True), background=0)
    assert np.array_equal(out == 0, gt == 0)
    assert same_partition(out[gt > 0], gt[gt > 0])


@pytest.mark.parametrize("split_cost,joined", [(0.2, True), (0.3, False)])
def test_a_split_section_rejoins_its_structure(split_cost, joined) -> None:
    gt = np.zeros((5, 20, 20), np.int32)
    gt[:, 4:16, 4:16] = 1
    sl = gt.copy()
    sl[2, 4:16, 10:16] = 2  # slice 2: the square split in two halves (IoU 0.5 each)
    out = link(sl, background=0, split_cost=split_cost)
    assert (len(np.unique(out[2, 4:16, 4:16])) == 1) is joined
    assert out[0, 8, 8] == out[2, 8, 6] == out[4, 8, 8]  # the bigger half always continues


def test_a_structure_that_starts_inside_the_ground_or_a_bigger_one_is_new() -> None:
    vol = np.zeros((6, 30, 30), np.int32)
    vol[3:, 12:18, 12:18] = 1  # appears at slice 3, inside the ground
    out = link(vol)
    assert out[3, 14, 14] != out[3, 0, 0] and out[5, 14, 14] == out[3, 14, 14]
    vol = np.zeros((6, 30, 30), np.int32)
    vol[:3, 5:25, 5:25] = 1  # 400 px on slices 0-2
    vol[3:, 10:17, 10:17] = 2  # 49 px from slice 3 in its footprint: IoU 0.12
    assert link(vol, background=0)[2, 12, 12] != link(vol, background=0)[3, 12, 12]
    out = link(vol, background=0, min_iou=0.1)
    assert out[2, 12, 12] == out[3, 12, 12]  # a lower IoU threshold continues it


def test_a_merged_section_is_carved_when_the_image_tells_the_structures_apart() -> None:
    gt = np.zeros((6, 20, 30), np.int32)
    gt[:, 5:15, 3:14] = 1
    gt[:, 5:15, 14:27] = 2
    gray = np.full(gt.shape, 20, np.uint8)
    gray[gt == 1] = 200
    gray[gt == 2] = 90
    sl = gt.copy()
    sl[3][sl[3] == 2] = 1  # slice 3: the two touching boxes merged into one segment
    assert same_partition(link(sl, background=0, gray=gray), gt)
    # without the image nothing says the merged segment is two things: it stays one
    out = link(sl, background=0)
    assert len(np.unique(out[3][gt[3] > 0])) == 1


def test_no_reidentification_across_a_gap_unless_asked() -> None:
    vol = np.zeros((8, 20, 20), np.int32)
    vol[:, 5:15, 5:15] = 1
    vol[3:5, 5:15, 5:15] = 0  # missing on two slices
    gray = np.where(vol > 0, 180, 30).astype(np.uint8)
    out = link(vol, gray=gray)
    assert out[2, 10, 10] != out[6, 10, 10]  # the preset: what comes back is another structure
    out = link(vol, gray=gray, reid_threshold=0.3, memory=3)
    assert out[2, 10, 10] == out[6, 10, 10]


def test_late_corrections_rewrite_the_slices_already_linked() -> None:
    # slice 1: the box split, its right edge too small to join (a young track); from slice
    # 2 the box whole again. The edge is a little brighter than the box (a quarter of its
    # rows) from slice 1 on, so its place looks more like the young track than like the box
    # and is carved out of the box's segment; then the young track is folded into the box
    # (alike enough) and the slices already linked are rewritten
    vol = np.zeros((6, 20, 20), np.int32)
    vol[:, 4:16, 4:16] = 1
    vol[1, 4:16, 14:16] = 2  # IoU 1/6 with the box: below min_iou + split_cost even alike
    gray = np.where(vol > 0, 180, 30).astype(np.uint8)
    gray[1:, 4:16:4, 14:16] = 200
    kept = link(vol, gray=gray, correction_window=0)
    assert kept[1, 8, 15] != kept[1, 8, 6] and kept[2, 8, 15] != kept[2, 8, 6]
    out = link(vol, gray=gray, correction_window=2, reid_threshold=0.5)  # folds judge the look too
    assert (out[:, 8, 15] == out[0, 8, 8]).all() and (out[:, 8, 6] == out[0, 8, 8]).all()


def test_more_slices_than_the_volume_is_an_error() -> None:
    vol = np.zeros((3, 8, 8), np.int32)
    with pytest.raises(ValueError, match="more slices"):
        link_volume((2, 8, 8), 0, _label_slices(vol, 0, None), VolumeConfig())


def test_iou_stitch_baseline_by_hand() -> None:
    # Cellpose's stitching, the benchmarks' baseline: many-to-one by best IoU >= threshold
    from temporal.engine.baseline import iou_stitch

    prev = np.zeros((10, 10), np.int32)
    prev[2:8, 2:8] = 5
    cur = np.zeros((10, 10), np.int32)
    cur[2:8, 2:5] = 1
    cur[2:8, 5:8] = 2  # a split: both halves have IoU 0.5 -> both take id 5 (not one-to-one)
    cur[0, 0] = 3      # a new speck
    ids, nxt = iou_stitch(prev, cur, next_id=6, threshold=0.25, background=0)
    assert ids[3, 3] == 5 and ids[3, 6] == 5
    assert ids[0, 0] == 6 and nxt == 7
    assert ids[9, 9] == 0
    ids, _ = iou_stitch(prev, cur, next_id=6, threshold=0.6, background=0)
    assert ids[3, 3] != 5 and ids[3, 6] != 5 and ids[3, 3] != ids[3, 6]
