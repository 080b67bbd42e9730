from __future__ import annotations

import numpy as np
import pytest

from temporal.flow import (DISFlow, FarnebackFlow, FlowEstimator, colour_check, label_displacements,
                            make_flow_estimator, resize_flow, sources, translate_labels, warp_labels)

from .conftest import texture


def test_warp_labels_constant_shift_is_exact():
    lab = np.zeros((10, 12), np.int32)
    lab[2:5, 3:6] = 7
    flow = np.zeros((10, 12, 2), np.float32)
    flow[..., 0] = -2  # current pixel x comes from previous x - 2: content moved right by 2
    flow[..., 1] = -1
    out = warp_labels(lab, flow)
    expected = np.zeros_like(lab)
    expected[3:6, 5:8] = 7
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_warp_labels_keeps_every_id_exactly(dtype):
    # ids of a long video grow past 2**24, where float32 samples would round them
    big = 2 ** 24 + 1 if dtype != np.uint8 else 255
    lab = np.zeros((6, 8), dtype)
    lab[:, 4:] = big
    lab[:, :4] = big - 2
    flow = np.zeros((6, 8, 2), np.float32)
    flow[..., 0] = 1  # every pixel comes from its right neighbour
    out = warp_labels(lab, flow, border_replicate=True)
    assert out.dtype == np.int32
    assert out[0, 3] == big and out[0, 2] == big - 2 and out[0, 7] == big


def test_warp_labels_invalid_and_border_fill():
    lab = np.full((4, 4), 3, np.int32)
    flow = np.zeros((4, 4, 2), np.float32)
    flow[..., 0] = 10  # samples out of frame
    assert (warp_labels(lab, flow, fill=0) == 0).all()
    assert (warp_labels(lab, flow, border_replicate=True) == 3).all()
    valid = np.zeros((4, 4), bool)
    valid[0, 0] = True
    out = warp_labels(lab, np.zeros_like(flow), valid=valid)
    assert out[0, 0] == 3 and out.sum() == 3


def test_colour_check_compares_every_channel_along_the_flow():
    # integer flows read the previous frame exactly: a pixel passes when all three channels
    # of the colour the flow brings are within the tolerance (a change of green or blue
    # alone, at the same grey level or not, fails it) and the flow brings it from inside
    # the previous frame (past the edge the colour repeats the border, so it would match)
    rng = np.random.default_rng(5)
    h, w = 7, 11
    prev = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    bwd = rng.integers(-2, 3, (h, w, 2)).astype(np.float32)
    ys, xs = np.mgrid[:h, :w]
    sy, sx = ys + bwd[..., 1].astype(int), xs + bwd[..., 0].astype(int)
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    brought = prev[np.clip(sy, 0, h - 1), np.clip(sx, 0, w - 1)]
    change = rng.integers(-40, 41, (h, w, 3))
    change[rng.random((h, w, 3)) < 0.6] = 0  # most channels keep their value
    cur = np.clip(brought.astype(int) + change, 0, 255).astype(np.uint8)
    ok = colour_check(prev, cur, bwd, 24)
    alike = (np.abs(cur.astype(int) - brought.astype(int)) <= 24).all(2)
    assert (ok == (alike & inside)).all()
    assert (alike & ~inside).sum() >= 5  # the edge test is exercised
    for c in range(3):  # each channel alone can fail it
        assert (~alike & inside & (np.abs(cur.astype(int) - brought.astype(int)).argmax(2) == c)).any()


def test_colour_check_sub_pixel_flow_is_each_channel_sampled_alone():
    # sub-pixel flows: the check samples the previous frame bilinearly; whatever channel
    # layout it samples in, each channel must be the one sampled from that channel alone
    # (here: the grey sampling of every channel on its own), and a precomputed sampling map
    # gives the same answer as the flow
    import cv2

    rng = np.random.default_rng(9)
    h, w = 31, 45
    prev = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), (5, 5), 1.5)
    bwd = rng.normal(0, 1.5, (h, w, 2)).astype(np.float32)
    src = sources(bwd)
    was = np.dstack([cv2.remap(np.ascontiguousarray(prev[..., c]), src, None, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE) for c in range(3)])
    cur = np.clip(was.astype(int) + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)
    inside = (src[..., 0] >= 0) & (src[..., 0] <= w - 1) & (src[..., 1] >= 0) & (src[..., 1] <= h - 1)
    want = (np.abs(cur.astype(int) - was.astype(int)) <= 24).all(2) & inside
    assert 0.1 < want.mean() < 0.9  # both answers occur
    np.testing.assert_array_equal(colour_check(prev, cur, bwd, 24), want)
    np.testing.assert_array_equal(colour_check(prev, cur, bwd, 24, src=src), want)
    lab = rng.integers(0, 5, (h, w)).astype(np.int32)
    np.testing.assert_array_equal(warp_labels(lab, bwd, want, src=src), warp_labels(lab, bwd, want))


def test_colour_check_on_grey_frames_and_one_pixel_past_the_edge():
    # grey frames are checked in grey levels; a flow that leaves the frame by one pixel
    # (right or bottom edge) fails however well the repeated border matches
    h, w = 6, 9
    prev = np.full((h, w), 100, np.uint8)
    cur = prev.copy()
    cur[2, 3], cur[3, 3] = 124, 125  # within / beyond the tolerance
    bwd = np.zeros((h, w, 2), np.float32)
    bwd[:, -1, 0] = 1.0  # the last column is brought from one past the right edge
    bwd[-1, :-1, 1] = 1.0  # the last row from one past the bottom edge
    ok = colour_check(prev, cur, bwd, 24)
    want = np.ones((h, w), bool)
    want[3, 3] = False
    want[:, -1] = want[-1, :] = False
    assert (ok == want).all()


@pytest.mark.parametrize("est", [DISFlow("ultrafast"), DISFlow("medium"), FarnebackFlow()])
def test_flow_backends_recover_a_shift(est):
    rng = np.random.default_rng(0)
    big = texture(rng, 80, 110, (128, 128, 128))
    a = big[10:70, 10:100]
    b = big[10:70, 7:97]  # content moves right by 3 px from a to b
    assert isinstance(est, FlowEstimator)
    f = est(a, b)
    assert f.shape == (60, 90, 2) and f.dtype == np.float32
    inner = f[15:45, 20:70]
    assert abs(float(np.median(inner[..., 0])) - 3.0) < 0.5
    assert abs(float(np.median(inner[..., 1]))) < 0.5


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
@pytest.mark.parametrize("hw", [(1, 1), (5, 400), (11, 11), (24, 300), (31, 300)])
def test_dis_flow_on_frames_smaller_than_it_takes(preset, hw):
    # OpenCV's DIS refuses such frames with an error, and on 31 x 300 its ultrafast and fast
    # presets crash the process (OpenCV 5.1): padded, the flow has the frame's size, and on
    # a strip tall enough to show texture it still finds the shift
    h, w = hw
    rng = np.random.default_rng(1)
    big = texture(rng, h + 4, w + 8, (128, 128, 128))
    a, b = big[2:2 + h, 4:4 + w], big[2:2 + h, 2:2 + w]  # content moves right by 2 px
    f = DISFlow(preset)(a, b)
    assert f.shape == (h, w, 2) and f.dtype == np.float32 and f.flags.c_contiguous
    assert np.isfinite(f).all()
    if h >= 24:
        inner = f[4:-4, 20:-20]
        assert abs(float(np.median(inner[..., 0])) - 2.0) < 0.5
        assert abs(float(np.median(inner[..., 1]))) < 0.5


def test_make_flow_estimator_unknown_name():
    with pytest.raises(ValueError, match="did you mean 'dis'"):
        make_flow_estimator("diss")


def test_resize_flow_scales_vectors():
    f = np.ones((10, 20, 2), np.float32)
    r = resize_flow(f, (20, 40))
    assert r.shape == (20, 40, 2)
    np.testing.assert_allclose(r[..., 0], 2.0)
    np.testing.assert_allclose(r[..., 1], 2.0)


def test_label_displacements_median_ignores_outliers_and_unreliable_pixels():
    labels = np.zeros((40, 60), np.int32)
    labels[5:15, 5:20] = 1
    labels[20:30, 30:50] = 2
    flow = np.zeros((40, 60, 2), np.float32)
    flow[labels == 1] = (-3.0, 2.0)  # backward (x, y): label 1 moved by dx=+3, dy=-2
    flow[5, 5:10] = (40.0, 40.0)  # a few wild vectors do not move the median
    flow[labels == 2] = (1.5, 0.0)
    disp, count = label_displacements(labels, flow, 4)
    assert count.tolist() == [0, 150, 200, 0]
    np.testing.assert_allclose(disp[1], (-2.0, 3.0))
    np.testing.assert_allclose(disp[2], (0.0, -1.5))
    np.testing.assert_allclose(disp[[0, 3]], 0.0)


def test_translate_labels_moves_each_label_and_draws_small_on_top():
    labels = np.ones((20, 30), np.int32)  # background 1, static
    labels[2:6, 2:8] = 2
    labels[10:14, 10:14] = 3
    shifts = np.array([[0, 0], [0, 0], [3, 4], [-8, 0]])
    out = translate_labels(labels, shifts)
    # 2 lands on rows 5:9, cols 6:12 and 3 on rows 2:6, cols 10:14: the smaller 3 wins the overlap
    assert (out[6:9, 6:12] == 2).all() and (out[5, 6:10] == 2).all() and (out == 2).sum() == 22
    assert (out[2:6, 10:14] == 3).all() and (out == 3).sum() == 16
    # uncovered parts of the old places are empty, the static background stays
    assert (out[2:5, 2:6] == 0).all() and (out[10:14, 10:14] == 0).all()
    assert out[0, 0] == 1 and out[19, 29] == 1
    # out-of-frame pixels are dropped; labels beyond the shift table stay in place
    out = translate_labels(labels, np.array([[0, 0], [0, 0], [-4, 0]]))
    assert (out == 2).sum() == 12 and (out[10:14, 10:14] == 3).all()


def _object_scene(rng, shift, hw=(120, 200), size=24, at=(40, 60)):
    """Two grayscale frames: a textured square on a textured background, moved by ``shift``."""
    import cv2

    bg = cv2.cvtColor(texture(rng, hw[0] + 40, hw[1] + 40, (110, 120, 100)), cv2.COLOR_RGB2GRAY)
    obj = cv2.cvtColor(texture(rng, size, size, (200, 60, 60)), cv2.COLOR_RGB2GRAY)
    prev, cur = bg[:hw[0], :hw[1]].copy(), bg[2:hw[0] + 2, 1:hw[1] + 1].copy()  # the background pans
    y, x = at
    prev[y:y + size, x:x + size] = obj
    lab = np.zeros(hw, np.int32)
    lab[y:y + size, x:x + size] = 5
    yy, xx = y + shift[0], x + shift[1]
    ya, xa, yb, xb = max(yy, 0), max(xx, 0), min(yy + size, hw[0]), min(xx + size, hw[1])
    cur[ya:yb, xa:xb] = obj[ya - yy:yb - yy, xa - xx:xb - xx]
    return prev, cur, lab


def test_translate_labels_of_sparse_large_ids_match_small_ids():
    # the drawing order (big labels first, small ones on top; ties: smaller label first)
    # is ranked over the labels present, not every id up to the largest
    rng = np.random.default_rng(4)
    small = rng.integers(0, 5, (30, 40)).astype(np.int32)
    big_of = np.array([0, 7, 90_000, 123_456, 123_457], np.int32)
    sh_small = np.array([[0, 0], [3, -2], [0, 0], [-4, 5], [2, 2]])
    sh_big = np.zeros((123_458, 2), np.int64)
    sh_big[big_of] = sh_small
    np.testing.assert_array_equal(translate_labels(big_of[small], sh_big), big_of[translate_labels(small, sh_small)])


def test_label_displacements_of_sparse_large_ids_match_small_ids():
    # ids grow through a long video and are never reused: the histograms are built for the
    # labels present only, and each id must still get its own median and count
    rng = np.random.default_rng(3)
    small = rng.integers(0, 4, (30, 40)).astype(np.int32)
    flow = rng.normal(0, 4, (30, 40, 2)).astype(np.float32)
    big_of = np.array([0, 7, 90_000, 123_456], np.int32)
    big = big_of[small]
    d_small, c_small = label_displacements(small, flow, 4)
    d_big, c_big = label_displacements(big, flow, 123_457)
    assert d_big.shape == (123_457, 2) and c_big.shape == (123_457,)
    np.testing.assert_array_equal(d_big[big_of[1:]], d_small[1:])
    np.testing.assert_array_equal(c_big[big_of], c_small)
    others = np.setdiff1d(np.arange(123_457), big_of[1:])
    assert not d_big[others].any() and not c_big[others[1:]].any()
    # ids at or above n are not measured
    d_cut, c_cut = label_displacements(big, flow, 90_000)
    np.testing.assert_array_equal(d_cut[7], d_small[1])
    assert c_cut.sum() == c_small[1]


