"""Tracker quality mechanisms: the older track keeps a re-fused object, careful flow
fallback when the cheap flow loses an object, split pieces matched to the remembered look."""
from __future__ import annotations

import numpy as np
import pytest

from temporal.config import TrackerConfig
from temporal.flow import make_flow_estimator
from temporal.proposals import segmentation_from_labels
from temporal.tracker import VideoSegmenter

from .conftest import Scene, seg_from_gt


def _square(split_col: int = 0) -> np.ndarray:
    """64x64 map: background 0, a 20x20 square (label 1) at rows/cols 20..39; with
    ``split_col`` its columns from there on are a segment of their own (label 2)."""
    lab = np.zeros((64, 64), np.int32)
    lab[20:40, 20:40] = 1
    if split_col:
        lab[20:40, split_col:40] = 2
    return lab


def _link_without_images(maps, **cfg):
    config = TrackerConfig(use_flow=False, handle_splits=False, handle_merges=False, reid=False,
                           hist_bins=0, **cfg)
    vs = VideoSegmenter(None, config)
    st = vs.init_state()
    return [vs.step(st, None, segmentation_from_labels(m, 16)) for m in maps], st


@pytest.mark.parametrize("prefer", [True, False])
def test_older_track_keeps_an_object_that_is_whole_again(prefer):
    # frames 0-3 whole (track A); frame 4 split at column 28: A keeps the bigger right piece,
    # the left one becomes track B; frame 5 split at column 32: B takes the bigger left piece;
    # frame 6 whole again: B overlaps it more (IoU 0.6 vs 0.4), so the plain assignment hands
    # the object to the fragment's id
    maps = [_square()] * 4 + [_square(28), _square(32)] + [_square()] * 3
    out, st = _link_without_images(maps, prefer_older_on_merge=prefer)
    a = int(out[0].labels[30, 30])
    b = int(out[4].labels[30, 22])
    assert a >= 1 and b >= 1 and a != b and int(out[4].labels[30, 35]) == a
    assert int(out[5].labels[30, 22]) == b and int(out[5].labels[30, 36]) == a
    owner = {int(v) for f in out[6:] for v in np.unique(f.labels[20:40, 20:40])}
    assert owner == ({a} if prefer else {b})
    # the piece was born inside A's mask: A is its parent (recorded only with the option on)
    assert st.registry[b].parent == (a if prefer else 0)


def test_prefer_older_leaves_different_looking_objects_alone(rng):
    # two differently coloured squares that touch: the segment covering both goes to the
    # best match, and the other object's id is carved out, not swapped in
    objs = [(1, 30, 20, 24, (230, 40, 40), 0, 2, 0, 99), (2, 30, 44, 24, (40, 40, 230), 0, 2, 0, 99)]
    sc = Scene(objs, hw=(96, 128), seed=1)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    first = None
    for t in range(5):
        img, gt = sc.frame(t)
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        if first is None:
            first = {g: int(np.bincount(tf.labels[gt == g]).argmax()) for g in (1, 2)}
    img, gt = sc.frame(5)
    merged = np.where(gt == 2, 1, gt)  # one segment for both squares
    tf = vs.step(st, img, seg_from_gt(merged, rng))
    for g in (1, 2):
        assert (tf.labels[gt == g] == first[g]).mean() > 0.8


class _BrokenFlow:
    """A flow estimator that is wrong everywhere (a constant jump), so the fb check fails."""

    def __init__(self):
        self.calls = 0

    def __call__(self, a, b):
        self.calls += 1
        f = np.zeros(a.shape[:2] + (2,), np.float32)
        f[..., 0] = 9.0  # backward and forward flows agree in sign: never consistent
        return f


class _CountingFlow:
    def __init__(self, preset: str):
        self.inner = make_flow_estimator("dis", preset)
        self.calls = 0

    def __call__(self, a, b):
        self.calls += 1
        return self.inner(a, b)


def test_flow_fallback_recomputes_when_the_cheap_flow_loses_an_object(rng):
    objs = [(1, 30, 10, 24, (230, 200, 40), 1, 3, 0, 99)]
    sc = Scene(objs, hw=(96, 128), seed=2)
    for fallback in (True, False):
        vs = VideoSegmenter(None, TrackerConfig(flow_fallback_preset="medium" if fallback else "none",
                                                flow_fallback_min_area=16))
        assert (vs.flow_fallback is not None) == fallback
        vs.flow = _BrokenFlow()
        if fallback:
            vs.flow_fallback = _CountingFlow("medium")
        st = vs.init_state()
        ids = []
        for t in range(6):
            img, gt = sc.frame(t)
            tf = vs.step(st, img, seg_from_gt(gt, rng))
            ids.append(int(np.bincount(tf.labels[gt == 1]).argmax()))
        if fallback:
            assert vs.flow_fallback.calls == 2 * 5  # every pair: backward and forward
            assert len(set(ids)) == 1
    # a flow that works never triggers the fallback
    vs = VideoSegmenter(None, TrackerConfig(flow_fallback_min_area=16))
    vs.flow_fallback = _CountingFlow("medium")
    st = vs.init_state()
    sc2 = Scene([(1, 30, 10, 24, (230, 200, 40), 0, 1, 0, 99)], hw=(96, 128), seed=2)
    for t in range(5):
        img, gt = sc2.frame(t)
        vs.step(st, img, seg_from_gt(gt, rng))
    assert vs.flow_fallback.calls == 0


def test_flow_fallback_config_is_validated():
    from diffseg_core.errors import InputError

    with pytest.raises(InputError, match="fallback"):
        TrackerConfig(flow_fallback_preset="slow")
    with pytest.raises(InputError):
        TrackerConfig(flow_fallback_valid=1.5)
    assert VideoSegmenter(None, TrackerConfig(dis_preset="medium")).flow_fallback is None
    assert VideoSegmenter(None, TrackerConfig(fb_check=False)).flow_fallback is None
