"""Scenario tests of the linking engine through `VideoSegmenter`: the situations the rules of
the previous tracker were written for (a re-fused object, a lost flow, split pieces, merges,
returning objects), each asserted on the engine's defaults; where a mechanism has a knob,
turning it off shows the failure it prevents."""
from __future__ import annotations

import numpy as np
import pytest

from diffseg_core.types import Segmentation
from temporal.engine.config import PredictConfig
from temporal.engine.predict import Predictor
from temporal.flow import make_flow_estimator
from temporal.proposals import proposals_from_labels, segmentation_from_labels
from temporal.tracker import VideoSegmenter

from .conftest import Scene, seg_from_gt, texture, tracker

FRAGMENT_GAP = pytest.mark.xfail(strict=True, reason="known gap of the engine: a young fragment beside its older track is folded only when their proposal maps (positions) also look alike; folding by colour alone fixed this scenario but lost 0.25 of the oracle on horsejump/SLIC (benchmarks/RESULTS.md)")


def _square(split_col: int = 0) -> np.ndarray:
    """64x64 map: background 0, a 20x20 square (label 1) at rows/cols 20..39; with
    ``split_col`` its columns from there on are a segment of their own (label 2)."""
    lab = np.zeros((64, 64), np.int32)
    lab[20:40, 20:40] = 1
    if split_col:
        lab[20:40, split_col:40] = 2
    return lab


def _link_without_images(maps, **cfg):
    config = tracker(flow="none", memory=0, hist_bins=0, **cfg)
    vs = VideoSegmenter(None, config)
    st = vs.init_state()
    return [vs.step(st, None, segmentation_from_labels(m, 16)) for m in maps], st


def test_older_track_keeps_an_object_that_is_whole_again():
    # frames 0-3 whole (track A); frame 4 split at column 28, frame 5 at column 32, frame 6
    # whole again: a plain one-to-one assignment gives a piece a new id and, when the object
    # is whole again, hands it to the fragment's id (it overlaps more)
    maps = [_square()] * 4 + [_square(28), _square(32)] + [_square()] * 3
    out, st = _link_without_images(maps)
    a = int(out[0].labels[30, 30])
    # the pieces of the split frames are parts of A (a split), and A keeps the object
    # when it is whole again
    assert all(np.unique(f.labels[20:40, 20:40]).tolist() == [a] for f in out), [
        np.unique(f.labels[20:40, 20:40]).tolist() for f in out]
    assert st.registry.max_id == max(a, int(out[0].labels[0, 0]))  # A and the ground: no fragment id


def test_prefer_older_leaves_different_looking_objects_alone(rng):
    # two differently coloured squares that touch: the segment covering both goes to the
    # best match, and the other object's id is carved out, not swapped in
    objs = [(1, 30, 20, 24, (230, 40, 40), 0, 2, 0, 99), (2, 30, 44, 24, (40, 40, 230), 0, 2, 0, 99)]
    sc = Scene(objs, hw=(96, 128), seed=1)
    vs = VideoSegmenter(None, tracker())
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
    """A flow estimator that is wrong everywhere (a jump out of the frame), so every pixel fails the check."""

    def __init__(self):
        self.calls = 0

    def __call__(self, a, b):
        self.calls += 1
        f = np.zeros(a.shape[:2] + (2,), np.float32)
        f[..., 0] = 1e4  # every pixel brought from outside the frame: the check fails everywhere
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
        vs = VideoSegmenter(None, tracker(fallback_preset="medium" if fallback else "none", memory=0))
        pr = vs.linker.predictor
        assert (pr.fallback is not None) == fallback
        pr.flow = _BrokenFlow()
        if fallback:
            pr.fallback = _CountingFlow("medium")
        st = vs.init_state()
        ids = []
        for t in range(6):
            img, gt = sc.frame(t)
            tf = vs.step(st, img, seg_from_gt(gt, rng))
            ids.append(int(np.bincount(tf.labels[gt == 1]).argmax()))
        if fallback:
            assert pr.fallback.calls == 5  # every pair (the backward flow)
        assert len(set(ids)) == 1, ids  # without the fallback: the constant-velocity guess
    # a flow that works never triggers the fallback
    vs = VideoSegmenter(None, tracker())
    vs.linker.predictor.fallback = _CountingFlow("medium")
    st = vs.init_state()
    sc2 = Scene([(1, 30, 10, 24, (230, 200, 40), 0, 1, 0, 99)], hw=(96, 128), seed=2)
    for t in range(5):
        img, gt = sc2.frame(t)
        vs.step(st, img, seg_from_gt(gt, rng))
    assert vs.linker.predictor.fallback.calls == 0


def test_grey_frames_alone_are_checked_in_grey_levels(rng):
    # a caller with grey frames only (no colour): the prediction still drops what the flow
    # cannot vouch for. A textured square moves 3 px right over a textured ground, and a
    # patch of the ground turns white (new content in place): the square keeps its id where
    # it moved, the white patch predicts nothing, the rest of the ground keeps its id
    import cv2

    h, w = 80, 120
    ground = cv2.cvtColor(texture(rng, h, w, (90, 90, 90)), cv2.COLOR_RGB2GRAY)
    square = cv2.cvtColor(texture(rng, 24, 24, (200, 200, 200)), cv2.COLOR_RGB2GRAY)
    prev, cur = ground.copy(), ground.copy()
    prev[30:54, 40:64] = square
    cur[30:54, 43:67] = square
    cur[5:20, 90:110] = 255
    ids = np.ones((h, w), np.int32)
    ids[30:54, 40:64] = 2
    p = Predictor(PredictConfig(work_side=0))(ids, prev, cur)
    assert p.valid is not None and p.flow is not None
    assert (p.labels[33:51, 47:64] == 2).mean() > 0.95  # the square's inside, where it moved
    assert (p.labels[7:18, 92:108] == 0).all()  # new content: unvouched
    assert (p.labels[60:, :30] == 1).mean() > 0.95  # still ground
    assert (p.labels == 2).sum() < 1.2 * 24 * 24  # no trail of the square's id


def test_flow_fallback_config_is_validated():
    from diffseg_core.errors import InputError

    with pytest.raises(InputError, match="fallback"):
        PredictConfig(fallback_preset="slow")
    with pytest.raises(InputError, match="colour_tolerance"):
        PredictConfig(colour_tolerance=-1)
    assert Predictor(PredictConfig(dis_preset="medium")).fallback is None  # same preset: no retry
    assert Predictor(PredictConfig(colour_tolerance=0)).fallback is None  # no check, no loss to notice


def _link_maps(maps, **cfg):
    """Link label maps without flow (the prediction of a track is its last mask), with
    split and merge handling on; images: a red textured object (every label > 0) over a
    green textured background, so colour tells object pieces from background."""
    rng = np.random.default_rng(7)
    bg = texture(rng, 64, 64, (60, 160, 60))
    fg = texture(rng, 64, 64, (200, 50, 50))
    vs = VideoSegmenter(None, tracker(flow="none", memory=0, **cfg))
    st = vs.init_state()
    out = []
    for m in maps:
        img = np.where((m > 0)[..., None], fg, bg)
        out.append(vs.step(st, img, segmentation_from_labels(m, 16)))
    return out, st


def test_a_piece_half_outside_the_prediction_joins_when_it_improves_the_fit():
    # the square (rows/cols 20..39) grows to the right in two pieces: cols 20..31 (inside
    # the prediction) and cols 32..47, of which only half lies inside it (below
    # split_containment); adding it raises the track's IoU with its prediction 0.6 -> 0.71
    lab = np.zeros((64, 64), np.int32)
    lab[20:40, 20:32] = 1
    lab[20:40, 32:48] = 2
    out, _ = _link_maps([_square()] * 3 + [lab])
    a = int(out[0].labels[30, 30])
    assert int(out[3].labels[30, 25]) == a
    assert int(out[3].labels[30, 40]) == a
    # a background piece with little inside the prediction never joins
    lab2 = np.zeros((64, 64), np.int32)
    lab2[20:40, 20:40] = 1
    lab2[20:40, 38:64] = 2  # 40 of 520 pixels inside the square's prediction
    out2, _ = _link_maps([_square()] * 3 + [lab2])
    assert int(out2[3].labels[30, 50]) != int(out2[0].labels[30, 30])


@FRAGMENT_GAP
def test_a_fresh_fragment_yields_the_reunited_object_to_the_older_track():
    # frames 0-3: square at cols 20..39 (track A). Frame 4: it jumps to cols 30..49 and
    # splits at col 38: A keeps cols 30..37, cols 38..49 lie mostly outside A's prediction
    # and start track B. Frame 5: whole at cols 34..53; B's prediction fits it better
    # (IoU 0.6) and only half of A's prediction lies inside it (below merge_containment),
    # but B is a fresh fragment: A keeps the object
    f4 = np.zeros((64, 64), np.int32)
    f4[20:40, 30:38] = 1
    f4[20:40, 38:50] = 2
    f5 = np.zeros((64, 64), np.int32)
    f5[20:40, 34:54] = 1
    out, st = _link_maps([_square()] * 4 + [f4, f5])
    a, b = int(out[0].labels[30, 30]), int(out[4].labels[30, 45])
    assert int(out[4].labels[30, 33]) == a and b not in (0, a)
    assert np.unique(out[5].labels[20:40, 34:54]).tolist() == [a]
    assert out[5].absorbed == {b: a} and b not in st.registry  # folded into A


@FRAGMENT_GAP
def test_the_older_track_keeps_an_object_whose_two_small_predictions_fuse():
    # frames 0-3: square rows/cols 20..39 (track A). Frame 4: the object is mostly hidden:
    # A keeps a 50 px sliver (rows 20..24) and a 70 px sliver below the old square (rows
    # 44..50) starts track B. Frame 5: one 320 px segment holds both predictions; B's is
    # the bigger share (0.22 vs 0.16, below the fifth the older track used to need) and
    # wins the assignment, but A accounts for a comparable part of it: A keeps the object
    f4 = np.zeros((64, 64), np.int32)
    f4[20:25, 20:30] = 1
    f4[44:51, 20:30] = 2
    f5 = np.zeros((64, 64), np.int32)
    f5[20:52, 20:30] = 1
    out, st = _link_maps([_square()] * 4 + [f4, f5])
    a, b = int(out[0].labels[30, 30]), int(out[4].labels[46, 25])
    assert int(out[4].labels[22, 25]) == a and b not in (0, a)
    assert np.unique(out[5].labels[20:52, 20:30]).tolist() == [a]
    assert out[5].absorbed.get(b) == a and b not in st.registry


def test_first_frame_object_merged_at_once_is_carved_out(rng):
    # an object born on the first frame and swallowed by the background on the next frame
    # keeps its id (it is not a piece split off: merge_min_age does not apply)
    sc = Scene([(1, 30, 20, 24, (230, 40, 40), 1, 2, 0, 99)], hw=(96, 128), seed=4)
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    img, gt = sc.frame(0)
    a = int(np.bincount(vs.step(st, img, seg_from_gt(gt, rng)).labels[gt == 1]).argmax())
    img, gt = sc.frame(1)
    tf = vs.step(st, img, seg_from_gt(np.zeros_like(gt), rng))  # one segment: everything
    assert (tf.labels[gt == 1] == a).mean() > 0.8
    assert (tf.labels[gt == 0] != a).mean() > 0.95


@FRAGMENT_GAP
def test_first_frame_halves_of_one_object_reunite_under_one_id(rng):
    # the first frame splits an object into two look-alike halves (two tracks); once it is
    # whole, one id covers it and the other half is not carved out of it
    sc = Scene([(1, 30, 20, 24, (230, 40, 40), 0, 1, 0, 99)], hw=(96, 128), seed=5)
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    img, gt = sc.frame(0)
    lab = gt.copy()
    lab[(gt == 1) & (np.arange(gt.shape[1])[None, :] >= 32)] = 2
    tf = vs.step(st, img, seg_from_gt(lab, rng))
    assert len(np.unique(tf.labels[gt == 1])) == 2
    for t in (1, 2, 3):
        img, gt = sc.frame(t)
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        vals, counts = np.unique(tf.labels[gt == 1], return_counts=True)
        assert counts.max() / counts.sum() > 0.95, (t, dict(zip(vals.tolist(), counts.tolist())))


def test_motion_model_keeps_an_object_the_flow_loses(rng):
    # a square moving 6 px per frame; from frame 4 on the flow is broken (every pixel
    # fails the check) and there is no fallback or re-identification: only the
    # constant-velocity guess of the motion model still predicts where the object went
    sc = Scene([(1, 30, 10, 20, (230, 200, 40), 0, 6, 0, 99)], hw=(96, 160), seed=6)
    vs = VideoSegmenter(None, tracker(fallback_preset="none", memory=0))
    st = vs.init_state()
    ids = []
    for t in range(8):
        if t == 4:
            vs.linker.predictor.flow = _BrokenFlow()
        img, gt = sc.frame(t)
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        ids.append(int(np.bincount(tf.labels[gt == 1]).argmax()))
    assert len(set(ids)) == 1, ids
    # the last measured displacement: 6 px per frame to the right (frames are below the
    # 240 px work side, so at full resolution)
    assert st.registry[ids[0]].velocity == pytest.approx((0.0, 6.0), abs=1.0)


def test_an_object_appearing_over_the_background_is_not_a_piece_of_it(rng):
    # an object appears in the middle of the frame (out from behind something) inside the
    # background's predicted mask; it looks nothing like the background, so it is a new
    # object, not a split piece of the background: when its segment is merged into the
    # background segment later, it is carved out and keeps its id
    sc = Scene([(1, 30, 40, 22, (230, 60, 200), 1, 2, 3, 99)], hw=(96, 160), seed=8)
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    ids = {}
    for t in range(11):
        img, gt = sc.frame(t)
        seg = seg_from_gt(np.zeros_like(gt) if t == 8 else gt, rng)
        tf = vs.step(st, img, seg)
        if t >= 3:
            vals, counts = np.unique(tf.labels[gt == 1], return_counts=True)
            ids[t] = int(vals[np.argmax(counts)])
            assert counts.max() > 0.8 * counts.sum(), (t, vals, counts)
    assert len(set(ids.values())) == 1, ids


def _returning_object_ids(rng, twin: bool, **cfg) -> dict[int, int]:
    """The returning-object scene of the test below (magenta, yellow left edge: gone at
    frames 6-8, back from the right border at 9); with ``twin`` a look-alike object is
    visible at frames 0-5 too and never comes back. Returns frame -> the id covering most of
    the returning object."""
    W = 160
    objs = [(1, 30, 40, 22, (230, 60, 200), 0, 3, 0, 5), (1, 34, W - 4 + 54, 22, (230, 60, 200), 0, -6, 9, 99)]
    if twin:
        objs.append((2, 66, 30, 22, (230, 60, 200), 0, 3, 0, 5))
    sc = Scene(objs, hw=(96, W), seed=9)
    sc.tex[1][:, :6] = texture(np.random.default_rng(1), 22, 6, (230, 220, 40))
    if twin:
        sc.tex[2] = sc.tex[1].copy()
    vs = VideoSegmenter(None, tracker(**cfg))
    st = vs.init_state()
    ids = {}
    for t in range(16):
        img, gt = sc.frame(t)
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        if (gt == 1).any():
            vals, counts = np.unique(tf.labels[gt == 1], return_counts=True)
            ids[t] = int(vals[np.argmax(counts)])
    return ids


@pytest.mark.xfail(strict=True, reason="known gap: late re-identification compares where the remembered track "
                   "would be at its last velocity; this object comes back from the other side of the frame "
                   "(colour alone found it, but merged look-alike structures in grey volumes)")
def test_a_young_track_takes_back_the_id_of_a_returning_object(rng):
    # an object (magenta with a yellow left edge) leaves (frames 0-5 visible), is away for
    # three frames and comes back from the right border, leading with its yellow edge: that
    # first sliver looks unlike the object, so it starts a new track. Once the young track
    # shows the object's look it takes back the remembered id (the lifetimes of the two do
    # not overlap)
    ids = _returning_object_ids(rng, False)
    old = ids[0]
    assert all(ids[t] == old for t in range(6)) and 6 not in ids
    assert all(ids[t] == old for t in range(11, 16)), str(ids)


@pytest.mark.xfail(strict=True, reason="known gap: a track's remembered proposal map is a running average of its "
                   "places, which a fast object leaves behind; the last frame's map fixed this scene but was "
                   "neutral on the benchmark and lost bmx-trees at full resolution (benchmarks/RESULTS.md, session 23)")
def test_a_fast_object_the_segmenter_misses_for_a_frame_keeps_its_id(rng):
    # a square crossing the frame at 12 px a frame (two proposal-grid cells) that the
    # segmenter does not show at frame 5 (no segment there): at frame 6 the segment that
    # shows it again should take the remembered id back at once
    sc = Scene([(1, 10, 8, 20, (230, 60, 200), 6, 11, 0, 99)], hw=(96, 160), seed=3)
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    ids = {}
    for t in range(9):
        img, gt = sc.frame(t)
        lab = seg_from_gt(gt, rng, shuffle=False).labels  # 0 ground, 1 the square
        K = 2
        if t == 5:
            lab, K = np.where(gt == 1, -1, lab), 1
        props = proposals_from_labels(np.where(lab < 0, K, lab), K + 1, side=16)[:K]
        tf = vs.step(st, img, Segmentation(labels=lab, proposals=props))
        ids[t] = int(np.bincount(tf.labels[gt == 1]).argmax())
    assert len({ids[t] for t in ids if t != 5}) == 1, ids


def test_a_swallowed_track_is_carved_out_not_reidentified_elsewhere(rng):
    # frames 0-4: a red square (track A) over a green background. Frame 5: its segment is
    # merged into the background segment, and a red look-alike appears far away. A's
    # prediction lies inside the merged segment: A is carved out of it (a merge), and the
    # look-alike is a new object, not A re-identified (colour alone would say it is)
    objs = [(1, 20, 16, 22, (220, 50, 50), 1, 2, 0, 99), (2, 60, 96, 22, (220, 50, 50), 0, 0, 5, 99)]
    sc = Scene(objs, hw=(96, 128), seed=3)
    sc.tex[2] = sc.tex[1].copy()
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    for t in range(7):
        img, gt = sc.frame(t)
        lab = np.where(gt == 1, 0, gt) if t == 5 else gt  # the merge, on frame 5 only
        tf = vs.step(st, img, seg_from_gt(lab, rng))
        if t == 4:
            a = int(np.bincount(tf.labels[gt == 1]).argmax())
        if t == 5:
            assert np.mean(tf.labels[gt == 1] == a) > 0.8  # carved out of the merged segment
            assert not np.any(tf.labels[gt == 2] == a)  # the look-alike got an id of its own
    assert np.mean(tf.labels[gt == 1] == a) > 0.9 and not np.any(tf.labels[gt == 2] == a)


def test_first_frame_halves_show_one_id_from_the_first_frame_on(rng):
    # the first frame splits an object into two look-alike halves (two tracks born together);
    # on the next frame it is whole and one of them takes it: the other one, gone inside the
    # segment its twin took, is folded into it, and the id correction rewrites frame 0
    sc = Scene([(1, 30, 20, 24, (230, 40, 40), 0, 1, 0, 99)], hw=(96, 128), seed=5)
    frames, segs, gts = [], [], []
    for t in range(8):
        img, gt = sc.frame(t)
        lab = gt.copy()
        if t == 0:
            lab[(gt == 1) & (np.arange(gt.shape[1])[None, :] >= 32)] = 2
        frames.append(img)
        segs.append(seg_from_gt(lab, rng))
        gts.append(gt)
    out = list(VideoSegmenter(None, tracker(correction_window=5)).iter_video(frames, segs))
    ids = [set(np.unique(tf.labels[gt == 1]).tolist()) for tf, gt in zip(out, gts)]
    assert ids[0] == ids[1] and len(ids[0]) == 1, ids
    assert all(s == ids[0] for s in ids), ids
    # the folded twin is reported, and its id never shows
    folded = {y for tf in out for y in tf.absorbed}
    assert len(folded) == 1 and not folded & ids[0]


def test_twins_that_look_different_are_not_folded(rng):
    # two different objects born together; the small blue one goes behind the big red one
    # (its prediction then lies inside the red one's segment): it is hidden, not a half of
    # the red one, so it is not folded into it and keeps its id in the frames it was seen
    sc = Scene([(1, 20, 20, 40, (230, 40, 40), 0, 0, 0, 99), (2, 34, 84, 12, (40, 60, 230), 0, -8, 0, 4)],
               hw=(96, 128), seed=8)
    frames, segs, gts = [], [], []
    for t in range(9):
        img, gt = sc.frame(t)
        frames.append(img)
        segs.append(seg_from_gt(gt, rng))
        gts.append(gt)
    out = list(VideoSegmenter(None, tracker(correction_window=5)).iter_video(frames, segs))
    a = {int(np.bincount(tf.labels[gt == 1]).argmax()) for tf, gt in zip(out, gts)}
    b = {int(np.bincount(tf.labels[gt == 2]).argmax()) for tf, gt in zip(out[:5], gts[:5])}
    assert len(a) == 1 and len(b) == 1 and a != b, (a, b)
    assert not any(tf.absorbed for tf in out)


class _PanFlow:
    """A flow estimator that says everything moved ``dx`` pixels to the right (a camera pan)
    while nothing did: what the flow gives an object that stops while the background moves,
    or a half-hidden object dragged along by its occluder."""

    def __init__(self, dx: float):
        self.dx = dx

    def __call__(self, a, b):
        f = np.zeros(a.shape[:2] + (2,), np.float32)
        f[..., 0] = -self.dx  # backward flow (current -> previous)
        return f


def test_a_wrong_flow_does_not_hand_an_object_to_a_different_looking_track(rng):
    # the flow says the scene moved 30 px; a red square stays, a blue one appears where a
    # green one was: no-motion overlap alone would give the blue one the green one's id
    sc = Scene([(1, 30, 40, 20, (230, 40, 40), 0, 0, 0, 99), (2, 30, 100, 20, (40, 200, 40), 0, 0, 0, 2),
                (3, 30, 100, 20, (40, 60, 230), 0, 0, 3, 99)], hw=(96, 160), seed=10)
    vs = VideoSegmenter(None, tracker(colour_tolerance=0, memory=0, correction_window=0))
    st = vs.init_state()
    green = None
    for t in range(5):
        if t == 3:
            vs.linker.predictor.flow = _PanFlow(30.0)
        img, gt = sc.frame(t)
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        if t == 2:
            green = int(np.bincount(tf.labels[gt == 2]).argmax())
        if t >= 3:
            assert green not in np.unique(tf.labels[gt == 3]).tolist()


def test_a_wrong_flow_does_not_hand_a_background_segment_to_the_object_merged_into_it(rng):
    # the flow says the scene moved 30 px; on frame 3 the segmentation merges the square
    # into a background segment (the square covers 44 % of it): that segment is not
    # the square's (the merge carving's case), so the second association does not hand the
    # whole of it to the square's track
    sc = Scene([(1, 30, 40, 20, (230, 40, 40), 0, 0, 0, 99)], hw=(96, 160), seed=9)
    vs = VideoSegmenter(None, tracker(colour_tolerance=0, memory=0, correction_window=0))
    st = vs.init_state()
    for t in range(4):
        if t == 3:
            vs.linker.predictor.flow = _PanFlow(30.0)
        img, gt = sc.frame(t)
        lab = gt.copy()
        if t == 3:
            lab[25:55, 35:65] = 1  # the square (400 px) inside 900 px
        tf = vs.step(st, img, seg_from_gt(lab, rng))
        if t == 2:
            square = int(np.bincount(tf.labels[gt == 1]).argmax())
    assert (tf.labels[25:55, 35:65] == square).mean() < 0.5


def _stripes_with_band(gt: np.ndarray, band: "tuple[int, int] | None") -> np.ndarray:
    """Background in four horizontal stripes (labels 1-4), the object (gt 1) label 5; with
    ``band`` = (x0, x1), the columns x0..x1 of every stripe and the object are one segment
    (6) and the stripes' parts left and right of it are segments of their own."""
    H, W = gt.shape
    lab = np.repeat(np.arange(4, dtype=np.int32) * 2 + 1, H // 4)[:, None].repeat(W, 1)
    lab[gt == 1] = 9
    if band:
        lab[:, band[1]:] += np.where(lab[:, band[1]:] < 9, 1, 0).astype(np.int32)
        lab[:, band[0]:band[1]] = 10
    return lab


@pytest.mark.parametrize("carving", [True, False])
def test_an_object_merged_into_a_segment_nobody_took_is_carved_out(rng, carving):
    # frames 0-4: a red square over a background segmented as four horizontal stripes.
    # Frame 5: the segmentation merges the square with a vertical band of the background
    # (12x its area) that no stripe's track matches or contains: re-identification alone
    # would hand the square's track the whole band (object + background, and it would go
    # on as both); the track is carved out of it and the rest of the band gets another id
    sc = Scene([(1, 37, 69, 22, (230, 40, 40), 0, 0, 0, 99)], hw=(96, 160), seed=4)
    vs = VideoSegmenter(None, tracker() if carving else tracker(segment_trust=100.0))
    st = vs.init_state()
    for t in range(8):
        img, gt = sc.frame(t)
        lab = _stripes_with_band(gt, (50, 110) if t == 5 else None)
        vals = np.unique(lab)
        lut = np.zeros(int(vals.max()) + 1, np.int32)
        lut[vals] = rng.permutation(len(vals))
        tf = vs.step(st, img, segmentation_from_labels(lut[lab], 16))
        if t == 4:
            a = int(np.bincount(tf.labels[gt == 1]).argmax())
        if t == 5:
            on_object = np.mean(tf.labels[gt == 1] == a)
            on_rest = np.mean(tf.labels[(lab == 10) & (gt == 0)] == a)
    if carving:
        assert on_object > 0.9 and on_rest < 0.05
    else:  # the whole band is re-identified as the square's track (or the square is lost)
        assert on_object < 0.5 or on_rest > 0.5
    if carving:
        assert np.mean(tf.labels[gt == 1] == a) > 0.9  # after the merge, the square keeps its id



def _panning_scene(t: int, pan: int, bg: np.ndarray, obj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``t`` (120x200) of a camera panning over textured ground (``pan`` pixels per
    frame to the left) while an object (a textured 40x40 square of the ground's colours)
    walks slowly (1 pixel per frame, also to the left). Returns (image, object mask, band
    mask): the band is a stretch of the ground (100 px wide, moving with it) that the
    object stands in at first."""
    H, W, s = 120, 200, 40
    img = bg[:, pan * t:pan * t + W].copy()
    band = np.zeros((H, W), bool)
    b0 = 50 - pan * t
    band[:, max(b0, 0):max(b0 + 100, 0)] = True
    y, x = 40, 80 - t
    img[y:y + s, x:x + s] = obj
    mask = np.zeros((H, W), bool)
    mask[y:y + s, x:x + s] = True
    return img, mask, band & ~mask


@pytest.mark.xfail(strict=True, reason="known gap: only motion tells this object from the ground, and the "
                   "motion term was removed (it raised the families it was built on and lowered the held-out "
                   "one, benchmarks/RESULTS.md)")
def test_an_object_merged_with_the_ground_at_first_gets_its_own_id_once_segmented_apart(rng):
    # frame 0 segments the object together with the band of ground it stands in (one
    # segment: as DiffSeg may on a low-contrast object); later frames segment them apart.
    # The colours alike, only motion tells them apart: the camera pans 14 px per frame,
    # the object moves 1 px; the band's track keeps the object as a piece of itself
    pan, n = 14, 5
    bg = texture(np.random.default_rng(5), 120, 200 + pan * n, (100, 110, 95))
    obj = texture(np.random.default_rng(6), 40, 40, (105, 112, 92))
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    ids = []
    for t in range(n):
        img, mask, band = _panning_scene(t, pan, bg, obj)
        lab = np.zeros(mask.shape, np.int32)
        lab[band] = 1
        lab[mask] = 1 if t == 0 else 2
        perm = rng.permutation(3)
        tf = vs.step(st, img, segmentation_from_labels(perm[lab].astype(np.int32), 16))
        ids.append((int(np.bincount(tf.labels[mask]).argmax()), int(np.bincount(tf.labels[band]).argmax())))
    assert len({o for o, _ in ids[1:]}) == 1  # one id for the object from frame 1 on ...
    assert all(o != b for o, b in ids[1:])  # ... not the ground's


@pytest.mark.xfail(strict=True, reason="known gap: the first frame's granularity is kept for good; every later "
                   "segment inside a track's prediction continues it (part-of), even three regions of three "
                   "colours; deciding granularity over several frames (DEVA's in-clip consensus) is not built")
def test_an_under_segmented_first_frame_does_not_lock_in_one_id_for_everything():
    # frame 0: the segmenter shows one segment for the whole frame (DiffSeg's segment count
    # varies frame to frame); frames 1-5: three regions of clearly different colours, shown
    # as three segments every time. The three should end up with three ids.
    H = 96
    img = np.concatenate([texture(np.random.default_rng(k), H, 48, c)
                          for k, c in enumerate(((200, 40, 40), (40, 200, 60), (50, 60, 210)))], 1)
    regions = np.repeat(np.arange(3), 48)[None, :].repeat(H, 0).astype(np.int32)
    vs = VideoSegmenter(None, tracker())
    st = vs.init_state()
    for t in range(6):
        tf = vs.step(st, img, segmentation_from_labels(np.zeros_like(regions) if t == 0 else regions, 16))
    assert len({int(np.bincount(tf.labels[regions == r]).argmax()) for r in range(3)}) == 3
