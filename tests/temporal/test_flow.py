from __future__ import annotations

import numpy as np
import pytest

from temporal.flow import (DISFlow, FarnebackFlow, FlowEstimator, forward_backward_check, make_flow_estimator,
                           resize_flow, warp_labels, warp_maps)

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


def test_forward_backward_check_flags_inconsistent_pixels():
    bwd = np.zeros((8, 8, 2), np.float32)
    bwd[..., 0] = -1.0
    fwd = np.zeros((8, 8, 2), np.float32)
    fwd[..., 0] = 1.0
    ok = forward_backward_check(bwd, fwd, abs_tol=0.5, rel_tol=0.0)
    assert ok[:, 1:].all() and not ok[:, 0].any()  # x - 1 < 0 for the first column
    fwd[4, :, 0] = -3.0  # inconsistent row in the forward field
    ok = forward_backward_check(bwd, fwd, abs_tol=0.5, rel_tol=0.0)
    assert not ok[4].any() and ok[3, 1:].all()


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


def test_make_flow_estimator_unknown_name():
    with pytest.raises(ValueError, match="did you mean 'dis'"):
        make_flow_estimator("diss")


def test_warp_maps_moves_mass_and_stays_normalised():
    m = np.full((2, 8, 8), 1e-4, np.float32)
    m[0, 2, 2] = 1.0
    m[1, 5, 5] = 1.0
    m /= m.reshape(2, -1).sum(1)[:, None, None]
    flow = np.zeros((16, 16, 2), np.float32)  # given at twice the map resolution
    flow[..., 0] = -2.0  # = -1 cell at map resolution
    out = warp_maps(m, flow)
    np.testing.assert_allclose(out.reshape(2, -1).sum(1), 1.0, rtol=1e-5)
    assert np.unravel_index(out[0].argmax(), (8, 8)) == (2, 3)
    assert np.unravel_index(out[1].argmax(), (8, 8)) == (5, 6)


def test_resize_flow_scales_vectors():
    f = np.ones((10, 20, 2), np.float32)
    r = resize_flow(f, (20, 40))
    assert r.shape == (20, 40, 2)
    np.testing.assert_allclose(r[..., 0], 2.0)
    np.testing.assert_allclose(r[..., 1], 2.0)
