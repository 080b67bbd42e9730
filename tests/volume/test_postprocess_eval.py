"""3D cleanup, label statistics, Dice evaluation and multi-axis fusion."""
from __future__ import annotations

import numpy as np
import pytest

from tests.volume.helpers import spheres, stacked_ellipsoids
from volume.evaluate import oracle_dice, volume_dice
from volume.fusion import fuse_majority, match_to_reference
from volume.postprocess import label_stats, relabel_consecutive, remove_fragments, split_at_waists, waist_cuts


def test_fragment_joins_its_largest_neighbour() -> None:
    lab = np.ones((6, 10, 10), np.int32)
    lab[:, :, 5:] = 2
    lab[2, 2, 2] = 2       # a 1-voxel piece of label 2 inside label 1 -> becomes 1
    lab[3, 1:3, 7:9] = 5   # a whole tiny label (4 voxels) inside 2 -> becomes 2
    st = remove_fragments(lab, min_size=10, min_label_size=8)
    assert lab[2, 2, 2] == 1
    assert (lab[3, 1:3, 7:9] == 2).all()
    assert st.fragments == 2 and st.voxels == 5
    assert set(np.unique(lab).tolist()) == {1, 2}


def test_whole_small_structure_is_kept() -> None:
    lab = np.ones((6, 10, 10), np.int32)
    lab[2:4, 4:6, 4:6] = 3  # 8 voxels, one component: a small organ, not debris
    remove_fragments(lab, min_size=64, min_label_size=8)
    assert (lab == 3).sum() == 8


def test_split_disconnected_gives_new_ids() -> None:
    lab = np.zeros((4, 10, 10), np.int32)
    lab[:, 1:4, 1:4] = 1
    lab[:, 6:9, 6:9] = 1
    st = remove_fragments(lab, min_size=0, split_disconnected=True)
    assert st.split == 1
    assert lab[0, 2, 2] != lab[0, 7, 7] and lab[0, 7, 7] > 0


def test_relabel_consecutive_keeps_order() -> None:
    lab = np.array([[[0, 7, 7], [3, 0, 900]]], np.int32)
    n = relabel_consecutive(lab)
    assert n == 3
    assert lab.tolist() == [[[0, 2, 2], [1, 0, 3]]]


def test_label_stats_volume_bbox_and_slices() -> None:
    lab = np.zeros((5, 6, 7), np.int32)
    lab[1:4, 2:5, 3:4] = 1
    (info,) = label_stats(lab, spacing=(2.0, 0.5, 0.5), axis=0)
    assert info.id == 1 and info.voxels == 9
    assert info.volume == pytest.approx(9 * 0.5)
    assert info.bbox == [1, 2, 3, 4, 5, 4]
    assert info.slice_range == [1, 3]
    (info2,) = label_stats(lab, axis=2)
    assert info2.slice_range == [3, 3]


def test_dice_exact_and_hand_computed() -> None:
    gt = spheres((10, 20, 20))
    perm = np.array([0, 4, 3, 2, 1])
    s = volume_dice(perm[gt], gt)
    assert s.mean_dice == pytest.approx(1.0) and s.mean_oracle_dice == pytest.approx(1.0)
    # Hand-built: gt label 1 = 4 voxels, prediction covers 2 of them plus 2 others.
    g = np.zeros((1, 2, 4), np.int32)
    g[0, 0, :] = 1
    p = np.zeros((1, 2, 4), np.int32)
    p[0, :, 2:] = 9
    s2 = volume_dice(p, g)
    assert s2.dice == {1: pytest.approx(2 * 2 / (4 + 4))}
    assert s2.matched == {1: 9}


def test_oracle_ignores_id_swaps_between_slices() -> None:
    gt = np.zeros((4, 6, 6), np.int32)
    gt[:, :, :3] = 1
    gt[:, :, 3:] = 2
    pred = gt.copy()
    pred[2:] = 3 - gt[2:]  # ids swapped in the second half of the slices
    s = volume_dice(pred, gt)
    assert s.mean_oracle_dice == pytest.approx(1.0)
    assert s.mean_dice == pytest.approx(0.5)
    assert oracle_dice(pred, gt, axis=1)[1] == pytest.approx(0.5)  # along y the swap shows


def test_unmatched_gt_label_scores_zero() -> None:
    gt = np.zeros((2, 4, 4), np.int32)
    gt[:, :2] = 1
    gt[:, 2:] = 2
    pred = np.ones_like(gt)
    s = volume_dice(pred, gt)
    assert sorted(s.dice.values())[0] == 0.0
    assert s.n_gt == 2 and s.n_pred == 1


def test_fusion_matches_ids_then_votes() -> None:
    gt = spheres((12, 24, 24))
    ref = gt.copy()
    a = np.array([0, 2, 3, 4, 1], np.int32)[gt]  # same partition, other ids
    b = np.array([0, 3, 4, 1, 2], np.int32)[gt]
    lut = match_to_reference(ref, a)
    assert lut[2] == 1 and lut[1] == 4
    # The reference is wrong in one block; both other axes agree: the vote fixes it.
    ref[5, 0:4, 0:4] = 3
    fused = fuse_majority(ref, [a, b])
    assert np.array_equal(fused, gt)


def _profile_cuts(areas: list[int], ious: list[float], **kw) -> list[int]:
    """Cut positions of `waist_cuts` for one label with the given area / link-IoU profile."""
    a = np.array(areas, np.int64)[:, None]
    iou = np.array(ious, np.float64)[:, None]
    # inter from IoU: i = iou * (a0 + a1) / (1 + iou)
    inter = np.round(iou * (a[:-1] + a[1:]) / (1 + iou)).astype(np.int64)
    return np.flatnonzero(waist_cuts(a, inter, kw.pop("ratio", 0.75), kw.pop("max_iou", 0.5), **kw)[:, 0]).tolist()


def test_waist_cut_where_one_ellipsoid_ends_and_another_starts() -> None:
    # Tip of one structure (102 -> 76 -> 67) then a new one growing (115, 123), uncertain link.
    areas = [8, 69, 101, 102, 76, 67, 115, 123, 86, 9]
    ious = [0.1, 0.6, 0.95, 0.74, 0.43, 0.58, 0.93, 0.7, 0.1]
    assert _profile_cuts(areas, ious) == [4]  # between slice 4 and 5
    ious_conf = list(ious)
    ious_conf[4] = 0.8
    ious_conf[5] = 0.8
    assert _profile_cuts(areas, ious_conf) == []  # confident links are never cut


def test_no_waist_cut_for_gentle_narrowing_noise_or_tiny_areas() -> None:
    # A slowly narrowing organ (CT: 98, 85, 68, 66, 71, 80): the low is not <= 0.75 x 80.
    assert _profile_cuts([92, 98, 85, 68, 66, 71, 80, 92], [0.4] * 7) == []
    # Areas that jump up and down (a background piece) are not a waist.
    assert _profile_cuts([300, 120, 310, 90, 280, 100], [0.3] * 5) == []
    # A few pixels: boundary noise, below min_peak.
    assert _profile_cuts([12, 9, 5, 10, 13], [0.3] * 4) == []
    assert _profile_cuts([12, 9, 5, 10, 13], [0.3, 0.2, 0.35, 0.3], min_peak=10) == [1]  # lowest-IoU side


def test_split_at_waists_gives_the_second_structure_a_new_id() -> None:
    gt = stacked_ellipsoids()
    joined = (gt > 0).astype(np.int32)  # what overlap-only linking makes of it
    joined[gt == 0] = 0
    n = split_at_waists(joined, axis=0, ratio=0.75, max_iou=0.5)
    assert n == 1
    res = volume_dice(joined, gt, oracle=False)
    assert min(res.dice.values()) > 0.9
    # Along another axis the same volume has no waist: nothing is cut.
    again = (gt > 0).astype(np.int32)
    assert split_at_waists(np.ascontiguousarray(again.transpose(1, 0, 2)), axis=0) == 0
    assert split_at_waists(again, ratio=0.0) == 0  # 0 = off


def test_dice_matching_maximises_dice_not_overlap() -> None:
    # gt 1 = row 0 (8 voxels) of a 1x6x8 volume. Prediction 1 covers 6 of them and 32 other
    # voxels (38 in all): Dice 2*6/(8+38) = 12/46. Prediction 2 covers 2 of them and nothing
    # else: Dice 2*2/(8+2) = 0.4. The larger overlap loses to the better Dice.
    g = np.zeros((1, 6, 8), np.int32)
    g[0, 0] = 1
    p = np.zeros_like(g)
    p[0, 0:5] = 1
    p[0, 0, 0:2] = 2
    s = volume_dice(p, g)
    assert s.matched == {1: 2}
    assert s.dice[1] == pytest.approx(0.4) and s.mean_dice == pytest.approx(0.4)
    assert s.mean_oracle_dice == pytest.approx(0.4)


def test_global_and_oracle_dice_worked_out_by_hand() -> None:
    # Two slices of the volume above; the small prediction changes id between the slices
    # (2, then 3). Global matching: ids 2 and 3 each score 2*2/(16+2) = 0.222, id 1 scores
    # 2*12/(16+76) = 24/92 = 0.261, so id 1 wins. The per-slice oracle takes the small
    # prediction in both slices: 2*(2+2)/(16+4) = 0.4.
    g = np.zeros((2, 6, 8), np.int32)
    g[:, 0] = 1
    p = np.zeros_like(g)
    p[:, 0:5] = 1
    p[0, 0, 0:2] = 2
    p[1, 0, 0:2] = 3
    s = volume_dice(p, g)
    assert s.matched == {1: 1}
    assert s.mean_dice == pytest.approx(24 / 92)
    assert s.oracle_dice == {1: pytest.approx(0.4)}
    assert s.n_gt == 1 and s.n_pred == 3


def test_fusion_corrects_the_reference_axis_where_the_others_agree() -> None:
    # Reference: structure 1 bleeds into structure 2 over a 2x3x3 block. The other two
    # labellings (other ids) agree on the truth there and disagree with each other in one
    # voxel elsewhere, where the reference is kept.
    gt = np.zeros((4, 6, 6), np.int32)
    gt[:, :, :3] = 1
    gt[:, :, 3:] = 2
    ref = gt.copy()
    ref[1:3, 0:3, 3:6] = 1
    a = np.where(gt == 1, 7, 8).astype(np.int32)
    b = np.where(gt == 1, 5, 4).astype(np.int32)
    a[0, 5, 0] = 8  # a and b disagree here: the reference's 1 stays
    fused = fuse_majority(ref.copy(), [a, b])
    expected = gt.copy()
    np.testing.assert_array_equal(fused, expected)
    # where only one other axis disagrees with the reference, the reference wins
    c = b.copy()
    c[1:3, 0:3, 3:6] = 5
    fused2 = fuse_majority(ref.copy(), [a, c])
    np.testing.assert_array_equal(fused2, ref)


def test_slab_passes_hold_a_bounded_number_of_voxels_and_give_the_same_result(monkeypatch) -> None:
    from volume import geometry

    lab = spheres((20, 40, 48))
    lab[3:5, :4, :4] = 900  # a sparse id: the consecutive ids must skip the gap
    ref_ids = lab.copy()
    whole = relabel_consecutive(ref_ids), label_stats(lab)
    for budget in (40 * 48 * 3, 1):  # 3 slices a slab; and one slice when a slice is bigger
        monkeypatch.setattr(geometry, "SLAB_VOXELS", budget)
        sl = geometry.slabs(lab.shape)
        assert sl[0].start == 0 and sl[-1].stop == 20 and all(a.stop == b.start for a, b in zip(sl, sl[1:]))
        assert max(s.stop - s.start for s in sl) == max(1, budget // (40 * 48))
        got = lab.copy()
        assert relabel_consecutive(got) == whole[0] and label_stats(lab) == whole[1]
        np.testing.assert_array_equal(got, ref_ids)


def _blobs(seed: int, shape=(12, 40, 44), n: int = 6) -> np.ndarray:
    """Random ellipsoid instances (ids 1..n, later ones drawn over earlier ones)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    lab = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        c = rng.uniform([2, 6, 6], [shape[0] - 2, shape[1] - 6, shape[2] - 6])
        r = rng.uniform([1.5, 3, 3], [4, 9, 9])
        lab[((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1] = i
    return lab


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_and_surface_dice_equal_monai(seed: int) -> None:
    torch = pytest.importorskip("torch")
    metrics = pytest.importorskip("monai.metrics")
    gt = _blobs(seed)
    pred = np.roll(_blobs(seed), (1, 2, -1), axis=(0, 1, 2))  # shifted: distances > 0
    pred[pred == 3] = 0  # one label missed: HD95 None, surface Dice 0
    spacing, tol = (2.5, 0.8, 0.7), 1.5
    s = volume_dice(pred, gt, oracle=False, surface=True, spacing=spacing, tolerance=tol)
    for gid, pid in s.matched.items():
        if pid == 0:
            assert s.hd95[gid] is None and s.surface_dice[gid] == 0.0
            continue
        y = torch.from_numpy(gt == gid)[None, None].float()
        yp = torch.from_numpy(pred == pid)[None, None].float()
        hd = metrics.compute_hausdorff_distance(yp, y, include_background=True, percentile=95, spacing=spacing)
        nsd = metrics.compute_surface_dice(yp, y, class_thresholds=[tol], include_background=True, spacing=spacing)
        assert s.hd95[gid] == pytest.approx(float(hd), abs=1e-4), gid
        assert s.surface_dice[gid] == pytest.approx(float(nsd), abs=1e-4), gid
    assert any(v is None for v in s.hd95.values()) and s.mean_surface_dice < 1


@pytest.mark.parametrize("seed", [0, 1])
def test_instance_matching_equals_stardist(seed: int) -> None:
    stardist = pytest.importorskip("stardist.matching")
    gt = _blobs(seed, n=9)
    pred = np.roll(_blobs(seed, n=9), (0, 1, 1), axis=(0, 1, 2))
    pred[pred == 2] = 40  # ids need not be consecutive
    pred[pred == 7] = 0  # a missed instance
    x5 = int(np.median(np.nonzero(pred == 5)[2]))
    pred[(pred == 5) & (np.indices(pred.shape)[2] > x5)] = 41  # an instance split in halves
    pred[:2, :3, :3] = 50  # a spurious one
    s = volume_dice(pred, gt, oracle=False)
    ref = stardist.matching(gt, pred, thresh=0.5)
    for k in ("tp", "fp", "fn", "precision", "recall", "f1", "accuracy"):
        assert s.instances[k] == pytest.approx(getattr(ref, k), abs=1e-9), k
    assert 0 < s.instances["tp"] < 9 and s.instances["fp"] >= 2 and s.instances["fn"] >= 1


def test_ids_far_larger_than_their_number_are_counted_by_rank() -> None:
    # another tool's ids (hashed, near 2^31): no table of every id up to the largest (that
    # was a MemoryError); every figure is the one of the same labels numbered 1..n
    big_ids = np.array([0, 7, 2**20, 2**30, 2**30 + 5, 2**31 - 2, 2**31 - 1], np.int64)
    gt, pred = _blobs(0), np.roll(_blobs(0), (1, 2, -1), axis=(0, 1, 2))
    pred[pred == 3] = 0
    big_gt, big_pred = big_ids[gt].astype(np.int32), big_ids[pred].astype(np.int32)
    spacing = (2.0, 0.5, 0.5)
    small, big = label_stats(gt, spacing, axis=1), label_stats(big_gt, spacing, axis=1)
    assert [b.id for b in big] == [int(big_ids[s.id]) for s in small]
    assert [(b.voxels, b.volume, b.bbox, b.slice_range) for b in big] == \
        [(s.voxels, s.volume, s.bbox, s.slice_range) for s in small]
    renumbered = big_gt.copy()
    assert relabel_consecutive(renumbered) == len(small)
    np.testing.assert_array_equal(renumbered, np.searchsorted(np.unique(gt), gt))
    ref = volume_dice(pred, gt, surface=True, spacing=spacing)
    got = volume_dice(big_pred, big_gt, surface=True, spacing=spacing)
    relabel = {int(k): int(big_ids[k]) for k in range(len(big_ids))}
    assert got.dice == {relabel[g]: d for g, d in ref.dice.items()}
    assert got.matched == {relabel[g]: relabel[p] for g, p in ref.matched.items()}
    assert got.hd95 == {relabel[g]: h for g, h in ref.hd95.items()}
    assert got.surface_dice == {relabel[g]: d for g, d in ref.surface_dice.items()}
    assert got.oracle_dice == {relabel[g]: d for g, d in ref.oracle_dice.items()}
