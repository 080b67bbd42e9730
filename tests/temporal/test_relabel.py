"""Late id corrections: `temporal.relabel.IdCorrectionBuffer` and the tracker folding young
tracks into the older track they turn out to be (`TrackedFrame.absorbed`)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from temporal.config import TrackerConfig
from temporal.proposals import segmentation_from_labels
from temporal.relabel import IdCorrectionBuffer, relabel_frame
from temporal.tracker import VideoSegmenter
from temporal.types import TrackedFrame

from .conftest import texture


def _tf(i: int, ids: list[int], absorbed: "dict[int, int] | None" = None) -> TrackedFrame:
    """A 1 x len(ids) frame whose pixels are ``ids`` and whose segments map to them."""
    lab = np.array([ids], np.int32)
    return TrackedFrame(i, lab, np.unique(lab[lab > 0]).astype(np.int32),
                        segment_to_track=np.array(ids, np.int32), absorbed=absorbed or {})


def test_relabel_frame_rewrites_labels_ids_and_segment_map():
    tf = _tf(0, [0, 3, 5, 3])
    old = tf.labels
    relabel_frame(tf, {3: 1, 9: 2})
    assert tf.labels.tolist() == [[0, 1, 5, 1]] and tf.labels.dtype == np.int32
    assert tf.track_ids.tolist() == [1, 5] and tf.segment_to_track.tolist() == [0, 1, 5, 1]
    assert old.tolist() == [[0, 3, 5, 3]]  # a new array: arrays shared elsewhere are not touched
    tf2 = _tf(1, [5, 5])
    relabel_frame(tf2, {3: 1})
    assert tf2.labels.tolist() == [[5, 5]]


def test_buffer_delays_by_the_window_and_rewrites_only_held_frames():
    buf = IdCorrectionBuffer(2)
    out = []
    out += list(buf.push(_tf(0, [1, 2])))
    out += list(buf.push(_tf(1, [1, 7])))
    assert out == [] and len(buf) == 2
    out += list(buf.push(_tf(2, [1, 8])))
    assert [f.frame_index for f in out] == [0]
    # frame 3 folds 7 (frame 1: still held) and 2 (frame 0: already emitted) into 1
    out += list(buf.push(_tf(3, [1, 1], absorbed={7: 1, 2: 1})))
    out += list(buf.flush())
    assert [f.frame_index for f in out] == [0, 1, 2, 3]
    assert out[0].labels.tolist() == [[1, 2]]  # emitted before the correction: unchanged
    assert out[1].labels.tolist() == [[1, 1]] and out[1].track_ids.tolist() == [1]
    assert out[2].labels.tolist() == [[1, 8]]
    assert buf.n_corrected == 1


def test_buffer_chains_corrections_and_window_zero_passes_through():
    buf = IdCorrectionBuffer(3)
    frames = [_tf(0, [4]), _tf(1, [6]), _tf(2, [2], absorbed={4: 6}), _tf(3, [2], absorbed={6: 2})]
    out = [f for tf in frames for f in buf.push(tf)] + list(buf.flush())
    assert [int(f.labels[0, 0]) for f in out] == [2, 2, 2, 2]
    zero = IdCorrectionBuffer(0)
    f = _tf(0, [3])
    assert list(zero.push(f)) == [f] and list(zero.flush()) == []
    with pytest.raises(ValueError, match="window"):
        IdCorrectionBuffer(-1)


def _square(cols: tuple[int, int], split: int = 0) -> np.ndarray:
    lab = np.zeros((64, 64), np.int32)
    lab[20:40, cols[0]:cols[1]] = 1
    if split:
        lab[20:40, split:cols[1]] = 2
    return lab


def _link(maps, **cfg):
    """iter_video over label maps without flow; images: a red object over green."""
    rng = np.random.default_rng(7)
    bg, fg = texture(rng, 64, 64, (60, 160, 60)), texture(rng, 64, 64, (200, 50, 50))
    frames = [np.where((m > 0)[..., None], fg, bg) for m in maps]
    vs = VideoSegmenter(None, TrackerConfig(use_flow=False, reid=False, **cfg))
    segs = [segmentation_from_labels(m, 16) for m in maps]
    return list(vs.iter_video(frames, segs)), vs


@pytest.mark.parametrize("window", [5, 0])
def test_a_fragment_that_yields_never_shows_its_own_id(window):
    # frames 0-3: the square at cols 20..39 (track A). Frame 4: it jumps to 30..49 and splits
    # at col 38: the right piece lies mostly outside A's prediction and starts track B.
    # Frame 5: whole again; B is a fresh fragment and yields to A. With the correction window
    # B is folded into A and frame 4 is rewritten: the object has one id in every frame.
    maps = [_square((20, 40))] * 4 + [_square((30, 50), split=38), _square((34, 54))] + [_square((34, 54))] * 2
    out, vs = _link(maps, id_correction_window=window)
    a = int(out[0].labels[30, 30])
    assert [f.frame_index for f in out] == list(range(8))
    ids = [sorted(set(np.unique(f.labels[m > 0]).tolist())) for f, m in zip(out, maps)]
    if window:
        assert all(i == [a] for i in ids), ids
        assert out[5].absorbed and set(out[5].absorbed.values()) == {a}
    else:
        assert ids[4] != [a] and a in ids[4] and all(i == [a] for i in ids[5:]), ids


def test_a_young_track_is_not_folded_when_its_life_is_longer_than_the_window():
    # same scene, but the split lasts 3 frames: with a window of 1 the fragment's first frame
    # can no longer be rewritten, so its id is kept (no half-corrected history)
    maps = ([_square((20, 40))] * 4 + [_square((30, 50), split=38)] * 1
            + [_square((30, 50), split=44)] * 2 + [_square((34, 54))] * 2)
    out, _ = _link(maps, id_correction_window=1)
    assert not any(f.absorbed for f in out)
    out5, _ = _link(maps, id_correction_window=5)  # a window that spans its life: folded
    assert any(f.absorbed for f in out5)
    assert len({int(v) for f, m in zip(out5, maps) for v in np.unique(f.labels[m > 0])}) == 1


def test_frames_held_back_are_yielded_before_an_error():
    maps = [_square((20, 40))] * 4
    rng = np.random.default_rng(0)
    frames = [texture(rng, 64, 64, (90, 90, 90)) for _ in range(4)]
    frames.append(np.zeros((32, 32, 3), np.uint8))  # size changes: the 5th step raises
    vs = VideoSegmenter(None, TrackerConfig(use_flow=False, reid=False, id_correction_window=3))
    segs = [segmentation_from_labels(m, 16) for m in maps] + [segmentation_from_labels(np.zeros((32, 32), np.int32), 16)]
    got = []
    with pytest.raises(ValueError, match="differ in size|size changed"):
        for tf in vs.iter_video(frames, segs):
            got.append(tf.frame_index)
    assert got == [0, 1, 2, 3]


def test_a_young_stand_in_inside_the_older_tracks_segment_is_folded():
    # rule of `VideoSegmenter._stand_ins`: track 9 (born at frame 8) is gone at frame 10 and
    # its prediction lies inside segment 1, which track 2 (older) took; 9 looks like 2: it
    # stood in for 2 and is folded. Track 7 is in the same position but looks different (a
    # different object hidden by 2): only occluded. Track 4 is too old for the window.
    from temporal.tracks import TrackRegistry

    reg = TrackRegistry()
    for _ in range(9):
        reg.new(0)
    red, blue = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[5]
    for tid, first, hist in ((2, 0, red), (9, 8, red), (7, 8, blue), (4, 2, red)):
        reg[tid].first_frame, reg[tid].last_frame, reg[tid].hist = first, 9, hist  # all seen in frame 9
    A = np.array([2, 4, 7, 9])
    inter_raw = np.array([[50, 0], [0, 40], [0, 30], [2, 20]])  # (T, K) unchecked-warp overlaps
    seg_track = np.array([5, 2])  # segment 1 went to track 2 (re-identified, say)
    vs = VideoSegmenter(None, TrackerConfig(id_correction_window=5))
    yielded: dict[int, int] = {}
    vs._stand_ins(reg, A, inter_raw, seg_track, np.array([2, 5]), 10, yielded)
    assert yielded == {9: 2}
    assert vs._absorb(reg, yielded, np.array([2, 5]), 10) == {9: 2} and 9 not in reg and 7 in reg
    # present in this frame, or the segment's owner is younger: nothing to fold
    y2: dict[int, int] = {}
    vs._stand_ins(reg, A[:3], inter_raw[:3], seg_track, np.array([2, 5, 7]), 10, y2)
    assert y2 == {}


def test_a_young_stand_in_next_to_a_reidentified_older_track_is_folded():
    # the flow lost young track 9 (no warped pixels: not a row of A); this frame track 2
    # (older, same look) was re-identified on segment 1, right next to 9's last box: 9 stood
    # in for 2. Track 5 was last seen two frames ago: it may have moved twice its size, which
    # reaches the segment: folded too. Track 6 looks the same but was last seen far away;
    # track 7 is next to it but looks different; track 8, also last seen two frames ago, is
    # too small to have come that far: none of these is folded
    from temporal.tracks import TrackRegistry

    reg = TrackRegistry()
    for _ in range(9):
        reg.new(0)
    red, blue = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[5]
    for tid, first, last, box, hist in ((2, 0, 7, (22, 12, 30, 20), red), (9, 8, 9, (10, 10, 20, 20), red),
                                        (6, 8, 9, (50, 50, 60, 60), red), (7, 8, 9, (12, 12, 20, 20), blue),
                                        (5, 8, 8, (10, 10, 16, 16), red), (8, 8, 8, (10, 10, 14, 14), red)):
        t = reg[tid]
        t.first_frame, t.last_frame, t.bbox, t.hist = first, last, box, hist
    seg_w = np.zeros((64, 64), np.int32)
    seg_w[24:32, 12:20] = 1  # the segment track 2 was re-identified on
    A = np.array([3])
    inter_raw = np.array([[0, 0]])
    vs = VideoSegmenter(None, TrackerConfig(id_correction_window=5))
    yielded: dict[int, int] = {}
    boxes = ndimage.find_objects(seg_w + 1, max_label=2)
    vs._stand_ins(reg, A, inter_raw, np.array([3, 2]), np.array([2, 3]), 10, yielded, {2: 1}, boxes)
    assert yielded == {9: 2, 5: 2}
    y2: dict[int, int] = {}  # without the re-identification there is no evidence
    vs._stand_ins(reg, A, inter_raw, np.array([3, 2]), np.array([2, 3]), 10, y2, {}, boxes)
    assert y2 == {}


def _look(*weights: float) -> np.ndarray:
    """A colour histogram (8 cells) with the given weights on its first cells."""
    h = np.zeros(8, np.float32)
    h[: len(weights)] = weights
    return h / h.sum()


def test_a_split_piece_goes_to_the_recently_seen_track_it_looks_like():
    # rule of `VideoSegmenter._split_owner`: segment 1 lies inside the warp of background
    # track 2 (which swallowed the object last frame) and looks like it enough (0.82),
    # but track 5, seen last frame right there and unmatched now, looks more like it: the
    # piece is track 5's. Track 6 looks even more alike but its last box is elsewhere;
    # track 7 is right there but was last seen 5 frames ago
    from temporal.tracks import TrackRegistry

    reg = TrackRegistry()
    for _ in range(7):
        reg.new(0)
    piece = _look(1, 1, 0, 0)
    for tid, last, box, hist in ((2, 9, (0, 0, 64, 64), _look(1, 1, 1)), (5, 9, (20, 20, 30, 30), _look(1, 1, 0.2)),
                                 (6, 9, (50, 50, 60, 60), piece), (7, 5, (20, 20, 30, 30), piece)):
        reg[tid].last_frame, reg[tid].bbox, reg[tid].hist = last, box, hist
    seg_w = np.zeros((64, 64), np.int32)
    seg_w[21:31, 21:31] = 1
    boxes = ndimage.find_objects(seg_w + 1, max_label=2)
    hists = np.stack([_look(0, 1, 1, 1), piece])
    A = np.array([2])
    inter_raw = np.array([[3996, 100]])
    area_s = np.array([3996, 100])
    seg_track = np.array([2, 0])
    vs = VideoSegmenter(None, TrackerConfig())
    rivals = [t for t in (5, 6, 7) if 10 - reg[t].last_frame <= 2]  # as `_link` picks them (frame 10)
    assert vs._split_owner(reg, A, inter_raw, area_s, seg_track, hists, 1, rivals, boxes) == 5
    # without rivals (or with only the far one) the background keeps the piece
    assert vs._split_owner(reg, A, inter_raw, area_s, seg_track, hists, 1, [], boxes) == 2
    assert vs._split_owner(reg, A, inter_raw, area_s, seg_track, hists, 1, [6], boxes) == 2
    # a rival that looks no better than the owner (within the margin) does not claim it
    reg[5].hist = _look(1, 1, 0.8)
    assert vs._split_owner(reg, A, inter_raw, area_s, seg_track, hists, 1, [5], boxes) == 2


@pytest.mark.parametrize("case", ["near", "far", "looks_worse"])
def test_a_fresh_track_yields_to_an_older_look_alike_whose_prediction_the_flow_dragged_away(case):
    # rule of `VideoSegmenter._prefer_older`: young track 8 (born at frame 8) took segment 0
    # at frame 10; older track 4 is unmatched, its prediction lies elsewhere (5 of its 100
    # warped pixels in the segment: the flow moved it onto the background), but its last
    # box overlaps the segment's and it fits the segment's colour as well as the young one:
    # it keeps the segment. Not when its box is far away, or it looks clearly worse.
    from temporal.matching import Assignment
    from temporal.tracks import TrackRegistry

    reg = TrackRegistry()
    for _ in range(8):
        reg.new(0)
    reg[8].first_frame = 8
    look = _look(1, 1, 0, 0)
    reg[4].bbox = (50, 50, 60, 60) if case == "far" else (20, 20, 30, 30)
    reg[4].hist = _look(1, 1, 1, 1) if case == "looks_worse" else _look(1, 1, 0.1)
    reg[8].bbox, reg[8].hist = (22, 22, 31, 31), look
    seg_w = np.zeros((64, 64), np.int32)
    seg_w[21:31, 21:31] = 1  # segment 0 of the frame is label 1 here: boxes of label 1 = index 0
    boxes = ndimage.find_objects(seg_w, max_label=1)
    hists = np.stack([look])
    A = np.array([4, 8])
    asg = Assignment(rows=np.array([1]), cols=np.array([0]), unmatched_rows=np.array([0]),
                     unmatched_cols=np.array([], np.int64))
    inter = np.array([[5], [80]])
    area_t, area_s = np.array([100, 90]), np.array([100])
    seg_track = np.array([8])
    taken, yielded = {8}, {}
    vs = VideoSegmenter(None, TrackerConfig())
    vs._prefer_older(reg, A, asg, inter, area_t, area_s, seg_track, taken, 10, inter, yielded, hists, boxes)
    if case == "near":
        assert seg_track.tolist() == [4] and yielded == {8: 4} and taken == {4}
    else:
        assert seg_track.tolist() == [8] and yielded == {} and taken == {8}
