from __future__ import annotations

import numpy as np
import pytest

from temporal.matching import (bhattacharyya, cell_histograms, color_cells, color_histograms, iou_from_overlap,
                               overlap_matrix, symmetric_kl_matrix)
from temporal.proposals import proposals_from_labels, relabel_consecutive, segmentation_from_labels


def test_overlap_and_iou_hand_case():
    a = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 1],
                  [-1, -1, 1, 1]])
    b = np.array([[0, 1, 1, 1],
                  [0, 1, 1, 1],
                  [0, 0, 0, 0]])
    inter = overlap_matrix(a, 2, b, 2)
    np.testing.assert_array_equal(inter, [[2, 2], [2, 4]])
    iou = iou_from_overlap(inter, inter.sum(1), np.array([4, 6]))
    # a0 has 4 px, b0 has 4 counted px: IoU 2/6; a1 (6 px) vs b1 (6 px): 4/8
    np.testing.assert_allclose(iou, [[2 / 6, 2 / 8], [2 / 8, 4 / 8]])


def test_symmetric_kl_properties(rng):
    p = rng.random((4, 5, 5)) + 0.01
    q = rng.random((3, 5, 5)) + 0.01
    p /= p.reshape(4, -1).sum(1)[:, None, None]
    q /= q.reshape(3, -1).sum(1)[:, None, None]
    d = symmetric_kl_matrix(p, q)
    assert d.shape == (4, 3) and (d >= 0).all()
    np.testing.assert_allclose(d, symmetric_kl_matrix(q, p).T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diag(symmetric_kl_matrix(p, p)), 0, atol=1e-5)
    # two-point distributions: sKL = sum (p - q) log(p / q)
    a = np.array([[0.5, 0.5]])
    b = np.array([[0.9, 0.1]])
    expected = (0.5 - 0.9) * np.log(0.5 / 0.9) + (0.5 - 0.1) * np.log(0.5 / 0.1)
    np.testing.assert_allclose(symmetric_kl_matrix(a, b)[0, 0], expected, rtol=1e-5)


def test_proposals_from_labels_are_distributions_on_the_mask():
    lab = np.zeros((32, 48), np.int32)
    lab[:, 24:] = 1
    p = proposals_from_labels(lab, side=8, floor=1e-3)
    assert p.shape == (2, 8, 12) and p.dtype == np.float32
    np.testing.assert_allclose(p.reshape(2, -1).sum(1), 1, rtol=1e-5)
    assert p[0, :, :6].min() > 10 * p[0, :, 6:].max()
    seg = segmentation_from_labels(np.where(lab == 1, 40, 7))
    assert seg.num_segments == 2 and seg.meta["source_values"] == [7, 40]
    np.testing.assert_array_equal(seg.labels, lab)
    r, v = relabel_consecutive(np.array([[5, 9], [9, 5]]))
    np.testing.assert_array_equal(r, [[0, 1], [1, 0]])


def test_color_histograms_and_bhattacharyya():
    img = np.zeros((4, 4, 3), np.uint8)
    img[:, 2:] = 255
    lab = np.zeros((4, 4), np.int32)
    lab[:, 2:] = 1
    h = color_histograms(img, lab, 2, bins=2)
    assert h.shape == (2, 8)
    assert h[0, 0] == 1 and h[1, 7] == 1
    b = bhattacharyya(h, h)
    np.testing.assert_allclose(b, np.eye(2), atol=1e-6)


def test_color_cells_quantise_each_channel_by_hand():
    # 4 levels per channel: 0..63 -> 0, 64..127 -> 1, 128..191 -> 2, 192..255 -> 3
    img = np.array([[[0, 63, 64], [127, 128, 255]],
                    [[191, 192, 0], [255, 255, 255]]], np.uint8)
    cells = color_cells(img, 4)
    assert cells.dtype == np.int32
    np.testing.assert_array_equal(cells, [[(0 * 4 + 0) * 4 + 1, (1 * 4 + 2) * 4 + 3],
                                          [(2 * 4 + 3) * 4 + 0, 63]])
    # the cells a caller computed once give the same histograms
    lab = np.array([[0, 1], [1, 1]], np.int32)
    np.testing.assert_array_equal(cell_histograms(cells, lab, 2, 4), color_histograms(img, lab, 2, 4))
    with pytest.raises(ValueError, match="bins"):
        color_cells(img, 0)


@pytest.mark.parametrize("bins", [2, 8, 40, 41, 256])
def test_color_cells_every_colour_for_every_bin_count(bins):
    # every channel value in every channel: the fast path (up to 40 bins: the cells fit in
    # 16 bits) and the wide one agree with the formula, up to the last cell
    v = np.arange(256, dtype=np.uint8)
    img = np.stack([v, v[::-1], np.roll(v, 77)], -1)[None].repeat(2, 0)
    img[1] = 255
    lv = (img.astype(np.int64) * bins) >> 8
    cells = color_cells(img, bins)
    assert cells.dtype == np.int32
    np.testing.assert_array_equal(cells, (lv[..., 0] * bins + lv[..., 1]) * bins + lv[..., 2])
    assert cells.max() == bins ** 3 - 1


