"""Slice linking: ids consistent through the volume despite shuffles, splits and merges."""
from __future__ import annotations

import numpy as np
import pytest

from tests.volume.helpers import shuffle_slices, spheres
from volume.stacking import SliceLinker, carve, iou_stitch, segment_index
from volume.types import LinkConfig


def _link(vol: np.ndarray, cfg: LinkConfig = LinkConfig(), background=None) -> tuple[np.ndarray, SliceLinker]:
    lk = SliceLinker(cfg)
    out = np.zeros(vol.shape, np.int32)
    for z in range(vol.shape[0]):
        seg, _ = segment_index(vol[z], background)
        out[z] = lk.step(seg)
    return out, lk


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b are equal up to a one-to-one renaming of ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_segment_index_background() -> None:
    lab = np.array([[5, 0, 7], [7, 0, 5]])
    seg, vals = segment_index(lab, background=0)
    assert vals.tolist() == [5, 7]
    assert seg.tolist() == [[0, -1, 1], [1, -1, 0]]
    seg2, vals2 = segment_index(lab, background=None)
    assert vals2.tolist() == [0, 5, 7] and seg2.min() == 0


def test_shuffled_slices_are_linked_exactly() -> None:
    gt = spheres((16, 32, 40))
    out, lk = _link(shuffle_slices(gt, seed=1))
    assert _same_partition(out, gt)
    assert lk.stats.new_tracks == len(np.unique(gt))  # background + 4 structures


def test_background_value_gets_no_id() -> None:
    gt = spheres((12, 30, 30))
    out, _ = _link(shuffle_slices(gt, seed=2, keep_zero=True), background=0)
    assert np.array_equal(out == 0, gt == 0)
    assert _same_partition(out[gt > 0], gt[gt > 0])


def test_split_segment_rejoins_its_track() -> None:
    gt = np.zeros((5, 20, 20), np.int32)
    gt[:, 4:16, 4:16] = 1
    sl = gt.copy()
    sl[2, 4:16, 10:16] = 2  # slice 2: the square split in two halves
    out, lk = _link(sl)
    ids = np.unique(out[:, 4:16, 4:16])
    assert len(ids) == 1  # both halves keep the square's id
    assert lk.stats.splits_joined == 1


def test_new_structure_inside_background_gets_a_new_id() -> None:
    vol = np.zeros((6, 30, 30), np.int32)
    vol[3:, 12:18, 12:18] = 1  # appears at slice 3, inside the background
    out, _ = _link(vol)
    assert out[3, 14, 14] != out[3, 0, 0]
    assert out[5, 14, 14] == out[3, 14, 14]


def test_small_structure_starting_where_a_big_one_ended_gets_a_new_id() -> None:
    vol = np.zeros((6, 30, 30), np.int32)
    vol[:3, 5:25, 5:25] = 1   # a 400-pixel structure on slices 0-2
    vol[3:, 10:17, 10:17] = 2  # a 49-pixel one from slice 3, inside its footprint: IoU 0.12
    ids = {}
    for cover in (0.0, LinkConfig().min_cover):
        out, _ = _link(vol, LinkConfig(min_cover=cover), background=0)
        ids[cover] = (out[2, 12, 12], out[3, 12, 12])
    assert ids[0.0][0] == ids[0.0][1]  # IoU alone continues the big one
    assert ids[LinkConfig().min_cover][0] != ids[LinkConfig().min_cover][1]  # 12 % of it: no continuation
    with pytest.raises(Exception, match="min_cover"):
        LinkConfig(min_cover=1.5)


def test_merged_segment_is_carved_between_tracks() -> None:
    gt = np.zeros((6, 20, 30), np.int32)
    gt[:, 5:15, 3:14] = 1
    gt[:, 5:15, 14:27] = 2
    sl = gt.copy()
    sl[3][sl[3] == 2] = 1  # slice 3: the two touching boxes merged into one segment
    out, lk = _link(sl)
    assert lk.stats.merges_carved == 1
    assert _same_partition(out, gt)


def test_gap_of_a_few_slices_is_bridged_by_memory() -> None:
    vol = np.zeros((8, 20, 20), np.int32)
    vol[:, 5:15, 5:15] = 1
    vol[3:5, 5:15, 5:15] = 0  # missing on two slices (merged into background)
    out, _ = _link(vol, LinkConfig(memory=3))
    assert out[2, 10, 10] == out[6, 10, 10]
    out1, _ = _link(vol, LinkConfig(memory=1))
    assert out1[2, 10, 10] != out1[6, 10, 10]


def test_shape_change_is_an_error() -> None:
    lk = SliceLinker()
    lk.step(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="differs"):
        lk.step(np.zeros((4, 5), np.int32))


def test_carve_nearest_seed() -> None:
    region = np.ones((3, 6), bool)
    seeds = np.zeros((3, 6), np.int32)
    seeds[1, 0] = 4
    seeds[1, 5] = 9
    out = carve(region, seeds)
    assert out[:, :3].tolist() == [[4] * 3] * 3 and out[:, 3:].tolist() == [[9] * 3] * 3


def test_proposals_break_overlap_ties() -> None:
    # Slice 1: A = left half, B = right half. Slice 2: X = top half, Y = bottom half: every
    # IoU is 1/3, a tie. X's attention map equals B's, so the KL term must give X B's id.
    a = np.zeros((8, 8), np.int32)
    a[:, 4:] = 1
    b = np.zeros((8, 8), np.int32)
    b[4:, :] = 1
    p_a, p_b = np.full((2, 2), 1e-3, np.float32), np.full((2, 2), 1e-3, np.float32)
    p_a[0, 0] = 1.0
    p_b[1, 1] = 1.0
    p_a /= p_a.sum()
    p_b /= p_b.sum()
    props1 = np.stack([p_a, p_b])      # segment 0 = A, 1 = B
    props2 = np.stack([p_b, p_a])      # segment 0 = X (looks like B), 1 = Y (looks like A)
    results = {}
    for w in (0.0, 1.0):
        lk = SliceLinker(LinkConfig(kl_weight=w, min_overlap=0.01))
        first = lk.step(a, props1)
        second = lk.step(b, props2)
        results[w] = (second[0, 0] == first[0, 7])  # X took B's id
    assert results[1.0] and not results[0.0]


def test_iou_stitch_baseline() -> None:
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


def test_appearance_separates_structures_stacked_end_to_end() -> None:
    # Two boxes at the same place, one above the other (slices 0-3 and 4-7), different
    # intensity. Overlap alone continues the id; the histogram gate starts a new one.
    seg_vol = np.zeros((8, 20, 24), np.int32)
    seg_vol[:4, 5:15, 5:15] = 1
    seg_vol[4:, 5:15, 9:19] = 1  # shifted: IoU 60/140 < confident_iou, above min_overlap
    gray = np.full((8, 20, 24), 20, np.uint8)
    gray[:4][seg_vol[:4] == 1] = 200
    gray[4:][seg_vol[4:] == 1] = 90
    ids = {}
    for gate in (0.0, 0.5):
        lk = SliceLinker(LinkConfig(min_appearance=gate))
        out = [lk.step(seg_vol[z], None, gray[z]) for z in range(8)]
        ids[gate] = (out[3][10, 10], out[4][10, 12])
    assert ids[0.0][0] == ids[0.0][1]
    assert ids[0.5][0] != ids[0.5][1]


@pytest.mark.parametrize("side_a, same", [(3, False), (6, True)])
def test_min_overlap_gate_by_hand(side_a: int, same: bool) -> None:
    # Slice 0: a small square A. Slice 1: a 12x12 structure B over A's place. B covers all
    # of A, but continues A only when IoU >= min_overlap (0.1): 9/144 = 0.06 gives B a new
    # id; 36/144 = 0.25 continues A.
    vol = np.zeros((2, 20, 20), np.int32)
    vol[0, 8:8 + side_a, 8:8 + side_a] = 1
    vol[1, 4:16, 4:16] = 1
    out, lk = _link(vol, background=0)
    assert bool(out[0, 8, 8] == out[1, 10, 10]) is same
    assert lk.stats.splits_joined == 0
