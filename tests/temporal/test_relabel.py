"""Late id corrections: `temporal.relabel.IdCorrectionBuffer` and the tracker folding young
tracks into the older track they turn out to be (`TrackedFrame.absorbed`)."""
from __future__ import annotations

import numpy as np
import pytest

from temporal.proposals import segmentation_from_labels
from temporal.relabel import IdCorrectionBuffer, relabel_frame
from temporal.tracker import VideoSegmenter
from temporal.types import TrackedFrame

from .conftest import texture, tracker

FRAGMENT_GAP = pytest.mark.xfail(strict=True, reason="known gap of the engine: a young fragment beside its older track is folded only when their proposal maps (positions) also look alike; folding by colour alone fixed this scenario but lost 0.25 of the oracle on horsejump/SLIC (benchmarks/RESULTS.md)")


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
    vs = VideoSegmenter(None, tracker(flow="none", **cfg))
    segs = [segmentation_from_labels(m, 16) for m in maps]
    return list(vs.iter_video(frames, segs)), vs


@pytest.mark.parametrize("window", [pytest.param(5, marks=FRAGMENT_GAP), 0])
def test_a_fragment_that_yields_never_shows_its_own_id(window):
    # frames 0-3: the square at cols 20..39 (track A). Frame 4: it jumps to 30..49 and splits
    # at col 38: the right piece lies mostly outside A's prediction and starts track B.
    # Frame 5: whole again; B is a fresh fragment and yields to A. With the correction window
    # B is folded into A and frame 4 is rewritten: the object has one id in every frame.
    maps = [_square((20, 40))] * 4 + [_square((30, 50), split=38), _square((34, 54))] + [_square((34, 54))] * 2
    out, vs = _link(maps, correction_window=window)
    a = int(out[0].labels[30, 30])
    assert [f.frame_index for f in out] == list(range(8))
    ids = [sorted(set(np.unique(f.labels[m > 0]).tolist())) for f, m in zip(out, maps)]
    if window:
        assert all(i == [a] for i in ids), ids
        assert out[5].absorbed and set(out[5].absorbed.values()) == {a}
    else:  # no window, no fold: the fragment's id stays (correction_window 0 = no fold)
        assert ids[4] != [a] and a in ids[4] and not any(f.absorbed for f in out), ids


@FRAGMENT_GAP
def test_a_young_track_is_not_folded_when_its_life_is_longer_than_the_window():
    # same scene, but the split lasts 3 frames: with a window of 1 the fragment's first frame
    # can no longer be rewritten, so its id is kept (no half-corrected history)
    maps = ([_square((20, 40))] * 4 + [_square((30, 50), split=38)] * 1
            + [_square((30, 50), split=44)] * 2 + [_square((34, 54))] * 2)
    out, _ = _link(maps, correction_window=1)
    assert not any(f.absorbed for f in out)
    out5, _ = _link(maps, correction_window=5)  # a window that spans its life: folded
    assert any(f.absorbed for f in out5)
    assert len({int(v) for f, m in zip(out5, maps) for v in np.unique(f.labels[m > 0])}) == 1


def test_frames_held_back_are_yielded_before_an_error():
    maps = [_square((20, 40))] * 4
    rng = np.random.default_rng(0)
    frames = [texture(rng, 64, 64, (90, 90, 90)) for _ in range(4)]
    frames.append(np.zeros((32, 32, 3), np.uint8))  # size changes: the 5th step raises
    vs = VideoSegmenter(None, tracker(flow="none", reid_threshold=1.0, correction_window=3))
    segs = [segmentation_from_labels(m, 16) for m in maps] + [segmentation_from_labels(np.zeros((32, 32), np.int32), 16)]
    got = []
    with pytest.raises(ValueError, match="differ in size|size changed"):
        for tf in vs.iter_video(frames, segs):
            got.append(tf.frame_index)
    assert got == [0, 1, 2, 3]
