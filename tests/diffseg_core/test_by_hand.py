"""DiffSeg's math on inputs small enough to work out by hand, with literal expected results.

None of these needs ``../shared``: they pin the merge thresholds and iterations, the anchor
grid, the resolution weights of the aggregation and the NMS relabelling on every clone.

The merge fixture is a 4x4 latent whose queries in column ``c`` all attend with the map

    M_c(key) = exp(-|col(key) - c|) / Z        (the same for every row)

so there are four distinct maps. Their symmetric KL divergences (computed below with the
plain elementwise definition, not with the code under test) are

    KL(M0, M1) = 0.447, KL(M1, M2) = 0.462, KL(M0, M2) = 1.183, KL(M0, M3) = 1.985

With ``grid=4`` every one of the 16 queries is an anchor (axis positions 0, 1, 2, 3).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffseg_core.aggregate import aggregate, resolution_weights, upsample_maps
from diffseg_core.config import MergeConfig
from diffseg_core.merge import anchor_grid, axis_anchor_positions
from diffseg_core.pipeline import segment_aggregated


def _column_maps() -> np.ndarray:
    cols = np.arange(4)
    m = np.exp(-np.abs(cols[None, :] - cols[:, None]).astype(np.float64))  # (c, key column)
    m = np.repeat(m[:, None, :], 4, axis=1)  # (c, key row, key column)
    return m / m.sum(axis=(1, 2), keepdims=True)


def _sym_kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * ((a - b) * (np.log(a) - np.log(b))).sum())


def _aggregated() -> torch.Tensor:
    m = _column_maps()
    return torch.from_numpy(np.stack([m[q % 4] for q in range(16)]).astype(np.float32))


def test_fixture_divergences_are_the_documented_ones():
    m = _column_maps()
    assert _sym_kl(m[0], m[1]) == pytest.approx(0.4473, abs=1e-4)
    assert _sym_kl(m[1], m[2]) == pytest.approx(0.4621, abs=1e-4)
    assert _sym_kl(m[0], m[2]) == pytest.approx(1.1834, abs=1e-4)
    assert _sym_kl(m[0], m[3]) == pytest.approx(1.9853, abs=1e-4)
    # after the greedy pass at 0.6: A = (M0 + M1) / 2 and B = (M1 + M2 + M3) / 3
    a, b = (m[0] + m[1]) / 2, (m[1] + m[2] + m[3]) / 3
    assert _sym_kl(a, b) == pytest.approx(0.5452, abs=1e-4)


# (thresholds per iteration, labels of one row at 2x8, number of segments). Every row of
# the image is the same, so one row states the whole grid.
CASES = [
    # anchors merge identical maps only; greedy at 0.4 < 0.447 joins no neighbours: 4 columns
    ((0.01, 0.4), [0, 0, 1, 1, 2, 2, 3, 3], 4),
    # greedy at 0.6: proposal 0 takes M0, M1 (A); proposal M2 is still free and takes M1, M2,
    # M3 (B, M1 again, as the original's greedy does). A wins columns 0-1, B columns 2-3.
    ((0.01, 0.6), [0, 0, 0, 0, 1, 1, 1, 1], 2),
    # a third iteration at 0.6 > KL(A, B) = 0.545 merges A and B: one segment
    ((0.01, 0.6, 0.6), [0, 0, 0, 0, 0, 0, 0, 0], 1),
    # ... but not at 0.5 < 0.545
    ((0.01, 0.6, 0.5), [0, 0, 0, 0, 1, 1, 1, 1], 2),
    # anchor threshold 0.5: anchor c absorbs its neighbours ({0,1}, {0,1,2}, {1,2,3}, {2,3});
    # the two middle proposals win no pixel and are dropped
    ((0.5, 0.01), [0, 0, 0, 0, 1, 1, 1, 1], 2),
    # anchor threshold 0.25: nothing but identical maps: 4 columns
    ((0.25, 0.01), [0, 0, 1, 1, 2, 2, 3, 3], 4),
    # anchor threshold 1.2 > 1.183: proposals {0,1,2}, {0,1,2,3} (twice, deduplicated) and
    # {1,2,3}; the all-column mean wins no pixel, so the labels are 0 and 1, not 0 and 2
    ((1.2, 0.01), [0, 0, 0, 0, 1, 1, 1, 1], 2),
    # the paper's default (1.1 x 3) merges everything in this fixture
    ((1.1, 1.1, 1.1), [0, 0, 0, 0, 0, 0, 0, 0], 1),
]


@pytest.mark.parametrize("faithful_fp16", [True, False])
@pytest.mark.parametrize("thresholds, row, k", CASES)
def test_merge_thresholds_and_iterations_give_the_worked_out_labels(thresholds, row, k, faithful_fp16):
    seg = segment_aggregated(_aggregated(), MergeConfig(kl_threshold=thresholds, grid=4,
                                                        faithful_fp16=faithful_fp16), out_size=(2, 8))
    np.testing.assert_array_equal(seg.labels, np.array([row, row], np.int32))
    assert seg.num_segments == k and seg.proposals.shape == (k, 4, 4)
    np.testing.assert_allclose(seg.proposals.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_kept_proposals_are_the_worked_out_means():
    m = _column_maps()
    seg = segment_aggregated(_aggregated(), MergeConfig(kl_threshold=(0.01, 0.6), grid=4,
                                                        faithful_fp16=False), out_size=(4, 4))
    np.testing.assert_allclose(seg.proposals[0], (m[0] + m[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(seg.proposals[1], (m[1] + m[2] + m[3]) / 3, atol=1e-6)


def test_anchor_grid_by_hand():
    # 12 positions, 4 anchors: step 11 // 3 = 3, span 9, centred start (11 - 9) // 2 = 1
    assert axis_anchor_positions(12, 4) == [1, 4, 7, 10]
    assert axis_anchor_positions(8, 1) == [3]
    # 12x24 latent, grid 4: 4 rows, 8 columns (square spacing), flat index = row * 24 + col
    idx = anchor_grid((12, 24), 4).tolist()
    cols = axis_anchor_positions(24, 8)
    assert cols == [1, 4, 7, 10, 13, 16, 19, 22]  # step 23 // 7 = 3, span 21, start (23 - 21) // 2 = 1
    assert idx[:8] == [1 * 24 + c for c in cols] and idx[8] == 4 * 24 + 1 and len(idx) == 32


def test_resolution_weights_are_proportional_to_the_side():
    assert resolution_weights([(64, 64), (32, 32), (16, 16), (8, 8)]) == pytest.approx(
        [64 / 120, 32 / 120, 16 / 120, 8 / 120])
    assert resolution_weights([(2, 2), (1, 1)]) == pytest.approx([2 / 3, 1 / 3])


def test_aggregate_two_resolutions_by_hand():
    # Fine 2x2 grid: query q attends only to itself. Coarse 1x1 grid: its single key,
    # upsampled to 2x2 and renormalised, is uniform (1/4 each). Weights 2/3 and 1/3, so
    # out[q] = 2/3 * onehot(q) + 1/3 * 1/4: 0.75 on the diagonal, 1/12 elsewhere.
    fine = torch.eye(4)[None]
    coarse = torch.ones(1, 1, 1)
    out = aggregate([fine, coarse], [(2, 2), (1, 1)], (2, 2))[0].reshape(4, 4)
    expected = torch.full((4, 4), 1 / 12) + torch.eye(4) * (0.75 - 1 / 12)
    torch.testing.assert_close(out, expected)


def test_aggregate_upsamples_keys_bilinearly_and_renormalises():
    # A 2x2 layer whose every query attends to key (0, 0) only, on a 4x4 latent. Bilinear
    # upsampling (half-pixel centres) spreads key (0, 0) over the fine keys with weights
    # [1, 0.75, 0.25, 0] per axis; their outer product sums to 4, renormalised to 1.
    coarse = torch.zeros(1, 4, 4)
    coarse[0, :, 0] = 1.0
    out = aggregate([coarse], [(2, 2)], (4, 4))[0]
    w = torch.tensor([1.0, 0.75, 0.25, 0.0])
    expected = torch.outer(w, w) / 4
    for q in range(16):  # every fine query tiles the same coarse map
        torch.testing.assert_close(out[q], expected)


@pytest.mark.parametrize("small,big", [((32, 32), (64, 64)), ((8, 8), (64, 64)), ((4, 7), (7, 13)), ((3, 5), (3, 10))])
def test_upsample_maps_equals_bilinear_interpolation(small, big):
    # the two matrix products resample with torch's own bilinear weights (half-pixel
    # centres, clamped edges), odd ceil-halved grids included
    maps = torch.rand(5, *small, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.interpolate(maps[:, None], size=big, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(upsample_maps(maps, big), ref, rtol=1e-6, atol=1e-6)


def test_refinement_changes_the_worked_out_labels():
    # Anchor threshold 0.5 leaves proposals (M0+M1)/2, (M0+M1+M2)/3, (M1+M2+M3)/3, (M2+M3)/2;
    # without refinement the two outer ones win (2 segments, see CASES). K-means from these
    # centres assigns every query map M_c to the proposal centred on it, so each centre
    # becomes one column's map and every column is its own segment.
    plain = segment_aggregated(_aggregated(), MergeConfig(kl_threshold=(0.5, 0.01), grid=4), out_size=(2, 8))
    refined = segment_aggregated(_aggregated(), MergeConfig(kl_threshold=(0.5, 0.01), grid=4, refine=True),
                                 out_size=(2, 8))
    np.testing.assert_array_equal(plain.labels[0], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(refined.labels, [[0, 0, 1, 1, 2, 2, 3, 3]] * 2)
    np.testing.assert_allclose(refined.proposals, _column_maps().astype(np.float32), atol=1e-6)
