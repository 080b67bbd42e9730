from __future__ import annotations

import numpy as np
import pytest

from diffseg_core.types import Segmentation
from temporal.config import TrackerConfig, iou_only_baseline
from temporal.proposals import proposals_from_labels
from temporal.tracker import VideoSegmenter, VideoState, link_label_maps
from temporal.types import TrackedFrame

from .conftest import FakeSegmenter, Scene, seg_from_gt, tracker

TWO = [(1, 20, 10, 24, (220, 60, 60), 2, 1, 0, 99),
       (2, 55, 90, 20, (60, 60, 220), -1, -2, 0, 99)]


def gt_to_track(tf: TrackedFrame, gt: np.ndarray) -> dict[int, int]:
    """For every GT id present, the track id covering most of it."""
    out = {}
    for g in np.unique(gt):
        vals, counts = np.unique(tf.labels[gt == g], return_counts=True)
        out[int(g)] = int(vals[counts.argmax()])
    return out


def run(scene: Scene, n: int, cfg: TrackerConfig, rng, seg_fn=None):
    vs = VideoSegmenter(None, cfg)
    st = vs.init_state()
    maps = []
    for t in range(n):
        img, gt = scene.frame(t)
        seg = (seg_fn or seg_from_gt)(gt, rng) if (t % cfg.keyframe_every == 0) else None
        tf = vs.step(st, img, seg)
        maps.append(gt_to_track(tf, gt))
    return maps, st


def test_stable_ids_through_motion(rng):
    maps, st = run(Scene(TWO), 12, TrackerConfig(), rng)
    first = maps[0]
    assert len(set(first.values())) == 3 and min(first.values()) >= 1
    assert all(m == first for m in maps)
    assert st.registry.max_id == 3


def test_tracked_frame_contents(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    img, gt = sc.frame(0)
    seg = seg_from_gt(gt, rng)
    tf = vs.step(st, img, seg)
    assert tf.labels.dtype == np.int32 and tf.labels.shape == gt.shape
    assert tf.track_ids.dtype == np.int32
    np.testing.assert_array_equal(tf.track_ids, np.unique(tf.labels[tf.labels > 0]))
    assert tf.segmentation is seg and tf.keyframe and tf.frame_index == 0
    np.testing.assert_array_equal(tf.segment_to_track[seg.labels], tf.labels)


def test_new_object_gets_new_id_and_ids_are_never_reused(rng):
    objs = TWO + [(3, 10, 60, 16, (240, 240, 40), 1, 0, 5, 8)]
    maps, st = run(Scene(objs), 14, tracker(memory=2), rng)
    before = set(maps[4].values())
    new = maps[5][3]
    assert new not in before and new > max(before)
    assert all(m[3] == new for m in maps[5:9])
    # object 3 left at frame 9 and is retired after 2 missed frames
    assert new not in st.registry
    assert st.registry.max_id == new  # nothing else was created


def test_reidentification_after_occlusion(rng):
    # object 2 vanishes for frames 4..6 and comes back where it would have been
    sc = Scene(TWO)
    vs = VideoSegmenter(None, tracker(memory=5))
    st = vs.init_state()
    ids = []
    for t in range(10):
        img, gt = sc.frame(t)
        if 4 <= t <= 6:
            hide = gt == 2
            gt = np.where(hide, 0, gt)
            img = img.copy()
            img[hide] = sc.bg[hide]
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        ids.append(gt_to_track(tf, gt))
    assert ids[3][2] == ids[7][2] == ids[9][2]
    assert ids[0][1] == ids[9][1]


def test_retired_track_is_not_reidentified(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, tracker(memory=1))
    st = vs.init_state()
    ids = []
    for t in range(8):
        img, gt = sc.frame(t)
        if 3 <= t <= 5:
            hide = gt == 2
            gt = np.where(hide, 0, gt)
            img = img.copy()
            img[hide] = sc.bg[hide]
        ids.append(gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt))
    assert ids[6][2] != ids[2][2] and ids[6][2] > 3


def test_split_segments_join_their_track(rng):
    def split_seg(gt, r):
        lab = gt.copy()
        ys, xs = np.nonzero(gt == 1)
        mid = (ys.min() + ys.max()) // 2
        lab[(gt == 1) & (np.arange(gt.shape[0])[:, None] > mid)] = 3  # object 1 in two halves
        return seg_from_gt(lab, r)

    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    img, gt = sc.frame(0)
    t0 = gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt)
    img, gt = sc.frame(1)
    tf = vs.step(st, img, split_seg(gt, rng))
    assert np.unique(tf.labels[gt == 1]).tolist() == [t0[1]]
    # the IoU-only baseline, which has no part-of relation, gives the lost half a new id
    vs2 = VideoSegmenter(None, iou_only_baseline())
    st2 = vs2.init_state()
    img, gt = sc.frame(0)
    vs2.step(st2, img, seg_from_gt(gt, rng))
    img, gt = sc.frame(1)
    tf2 = vs2.step(st2, img, split_seg(gt, rng))
    assert len(np.unique(tf2.labels[gt == 1])) == 2


def _tracked_for(sc: Scene, n: int, rng, cfg: TrackerConfig = TrackerConfig()):
    """A tracker run over the first ``n`` frames of ``sc`` with exact segments: (segmenter
    wrapper, state, gt id -> track id of the last frame)."""
    vs = VideoSegmenter(None, cfg)
    st = vs.init_state()
    for t in range(n):
        img, gt = sc.frame(t)
        t0 = gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt)
    return vs, st, t0


def test_merged_segment_is_carved_so_both_ids_survive(rng):
    sc = Scene(TWO)
    vs, st, t0 = _tracked_for(sc, 4, rng)
    img, gt = sc.frame(4)
    merged = np.where(gt == 1, 0, gt)  # object 1 swallowed by the background segment
    tf = vs.step(st, img, seg_from_gt(merged, rng))
    inside = tf.labels[gt == 1]
    assert (inside == t0[1]).mean() > 0.8
    assert (tf.labels[gt == 0] == t0[0]).mean() > 0.95
    img, gt = sc.frame(5)
    assert gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt) == t0


def test_a_piece_split_off_last_frame_is_not_carved(rng):
    # frame 1 splits object 1 in two; frame 2 has it whole again: one id, no carved piece
    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    img, gt = sc.frame(0)
    t0 = gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt)
    img, gt = sc.frame(1)
    lab = gt.copy()
    lab[(gt == 1) & (np.arange(gt.shape[1])[None, :] > np.nonzero(gt == 1)[1].mean())] = 3
    vs.step(st, img, seg_from_gt(lab, rng))
    img, gt = sc.frame(2)
    tf = vs.step(st, img, seg_from_gt(gt, rng))
    assert np.unique(tf.labels[gt == 1]).tolist() == [t0[1]]


def test_fast_motion_flow_beats_iou_only_baseline(rng):
    # a 16 px square jumping 14 px per frame: its masks in consecutive frames barely overlap
    objs = [(1, 40, 4, 16, (230, 200, 40), 0, 14, 0, 99)]
    maps_flow, _ = run(Scene(objs, hw=(96, 160), seed=3), 8, TrackerConfig(), rng)
    maps_iou, _ = run(Scene(objs, hw=(96, 160), seed=3), 8, iou_only_baseline(), rng)
    assert len({m[1] for m in maps_flow}) == 1
    assert len({m[1] for m in maps_iou}) > 1


def test_keyframe_mode_with_segmenter_batches_and_propagates(rng):
    sc = Scene(TWO)
    fake = FakeSegmenter(sc)
    frames = []
    for t in range(10):
        img, gt = sc.frame(t)
        fake.register(t, img, gt)
        frames.append((img, gt))
    vs = VideoSegmenter(fake, TrackerConfig(keyframe_every=3, batch_size=2))
    out = list(vs.iter_video(f for f, _ in frames))
    assert fake.calls == 4 and fake.batches == [2, 2]  # keyframes 0, 3, 6, 9
    assert [tf.keyframe for tf in out] == [t % 3 == 0 for t in range(10)]
    ids = [gt_to_track(tf, gt) for tf, (_, gt) in zip(out, frames)]
    assert all(m == ids[0] for m in ids)
    # propagated frames follow the motion: object 1 moved 2 px down and 1 right per frame
    # (DIS on a 96x128 toy scene blurs ~2 px at the square's edges): propagation must beat
    # copying the keyframe's labels unchanged
    gt2 = frames[2][1] == 1
    propagated = (out[2].labels[gt2] == ids[0][1]).mean()
    static = (out[0].labels[gt2] == ids[0][1]).mean()
    assert propagated > 0.8 and propagated > static + 0.05


def test_without_flow_no_images_needed(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, tracker(flow="none"))
    segs, gts = [], []
    for t in range(6):
        _, gt = sc.frame(t)
        segs.append(seg_from_gt(gt, rng))
        gts.append(gt)
    out = list(vs.iter_video(None, segs))
    ids = [gt_to_track(tf, gt) for tf, gt in zip(out, gts)]
    assert all(m == ids[0] for m in ids)
    with pytest.raises(ValueError, match="frames"):
        list(VideoSegmenter(None, TrackerConfig()).iter_video(None, segs))


def test_id_offset_and_init_state(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig(id_offset=100))
    st = vs.init_state()
    img, gt = sc.frame(0)
    tf = vs.step(st, img, seg_from_gt(gt, rng))
    assert tf.track_ids.tolist() == [101, 102, 103]
    st2 = vs.init_state(id_offset=500)
    assert isinstance(st2, VideoState)
    assert vs.step(st2, img, seg_from_gt(gt, rng)).track_ids.min() == 501


def test_bad_inputs_raise_clear_errors(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    img, gt = sc.frame(0)
    with pytest.raises(ValueError, match=r"`frame` must be \(H, W, 3\) uint8"):
        vs.step(st, img[..., 0], seg_from_gt(gt, rng))
    with pytest.raises(ValueError, match="`segmentation` is required"):
        vs.step(st, img, None)
    vs.step(st, img, seg_from_gt(gt, rng))
    small = np.zeros((48, 64), np.int32)
    with pytest.raises(ValueError, match="differ in size|size changed"):
        vs.step(st, img, Segmentation(labels=small, proposals=proposals_from_labels(small, 1, side=8)))
    with pytest.raises(ValueError, match="keyframe_every"):
        TrackerConfig(keyframe_every=0)
    with pytest.raises(ValueError, match="did you mean"):
        tracker(flow="farnback")
    with pytest.raises(ValueError, match="unknown engine knob 'max_missed'"):
        tracker(max_missed=3)


@pytest.mark.parametrize("n_maps,n_frames,says", [(4, 3, "more segmentations than frames: the frames ended after 3"),
                                                   (3, 5, "more frames than segmentations: the segmentations ended after 3"),
                                                   (0, 1, "more frames than segmentations: the segmentations ended after 0")])
def test_frames_and_segmentations_of_different_lengths_are_an_error(rng, n_maps, n_frames, says):
    # pairing them until the shorter ends would drop what is left without a word: the frames
    # both have are yielded, then the mismatch is raised (iter_video, so link_label_maps too)
    sc = Scene(TWO)
    frames, maps = zip(*(sc.frame(t) for t in range(5)))
    got = []
    with pytest.raises(ValueError, match=says):
        for tf in link_label_maps(iter(maps[:n_maps]), iter(frames[:n_frames])):
            got.append(tf.labels)
    assert len(got) == min(n_maps, n_frames)
    vs = VideoSegmenter(None, TrackerConfig())
    segs = [seg_from_gt(g, rng) for g in maps]
    with pytest.raises(ValueError, match=says):
        list(vs.iter_video(frames[:n_frames], segs[:n_maps] if n_maps else []))
    assert len(list(link_label_maps(maps, frames))) == 5
    assert len(list(link_label_maps(maps[:2], None, tracker(flow="none")))) == 2


def test_float_chw_frames_are_accepted(rng):
    sc = Scene(TWO)
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    img, gt = sc.frame(0)
    chw = img.transpose(2, 0, 1).astype(np.float32) / 255
    tf = vs.step(st, chw, seg_from_gt(gt, rng))
    assert tf.labels.shape == gt.shape


def test_state_is_bounded(rng):
    # a long run with an object flickering in and out keeps at most the live tracks
    objs = TWO + [(3, 10, 60, 12, (240, 240, 40), 0, 0, 0, 999)]
    sc = Scene(objs)
    vs = VideoSegmenter(None, tracker(memory=2, reid_threshold=1.0))
    st = vs.init_state()
    for t in range(40):
        img, gt = sc.frame(t % 10)
        if t % 4 == 3:
            gt = np.where(gt == 3, 0, gt)
        vs.step(st, img, seg_from_gt(gt, rng))
    assert len(st.registry) <= 6


@pytest.mark.parametrize("window", [0, 5])
def test_iter_video_is_lazy_on_an_endless_stream(rng, window):
    import itertools

    sc = Scene(TWO)
    pulled = []

    def frames():
        for t in itertools.count():
            pulled.append(t)
            yield sc.frame(t % 20)[0]

    def segs():
        for t in itertools.count():
            yield seg_from_gt(sc.frame(t % 20)[1], rng)

    vs = VideoSegmenter(None, tracker(correction_window=window))
    out = list(itertools.islice(vs.iter_video(frames(), segs()), 5))
    assert [tf.frame_index for tf in out] == [0, 1, 2, 3, 4]
    assert len(pulled) <= 6 + window  # frames are held back by the id-correction window only


def test_segmenter_batches_are_bounded(rng):
    import itertools

    sc = Scene(TWO)
    fake = FakeSegmenter(sc)
    for t in range(20):
        img, gt = sc.frame(t)
        fake.register(t, img, gt)
    vs = VideoSegmenter(fake, TrackerConfig(keyframe_every=2, batch_size=3))
    out = list(itertools.islice(vs.iter_video(sc.frame(t)[0] for t in itertools.count()), 7))
    assert len(out) == 7 and max(fake.batches) == 3


@pytest.mark.parametrize("hidden, same_id", [(3, True), (4, False)])
def test_retirement_exactly_at_max_missed(rng, hidden, same_id):
    # max_missed=3: a track absent for 3 frames is still remembered and re-identified; absent
    # for 4 it was retired at the end of its 4th missing frame and the object comes back new.
    sc = Scene(TWO)
    vs = VideoSegmenter(None, tracker(memory=3))
    st = vs.init_state()
    ids = []
    for t in range(4 + hidden + 2):
        img, gt = sc.frame(t)
        if 4 <= t < 4 + hidden:
            hide = gt == 2
            gt = np.where(hide, 0, gt)
            img = img.copy()
            img[hide] = sc.bg[hide]
        ids.append(gt_to_track(vs.step(st, img, seg_from_gt(gt, rng)), gt))
    back = 4 + hidden
    assert bool(ids[back][2] == ids[3][2]) is same_id
    assert ids[back][2] == ids[back + 1][2]
    assert ids[back][1] == ids[0][1]  # the other object keeps its id throughout


def test_registry_retires_on_the_frame_the_limit_is_passed():
    from temporal.tracks import TrackRegistry

    reg = TrackRegistry(max_missed=2, id_offset=10)
    a, b = reg.new(0), reg.new(0)
    assert (a.id, b.id) == (11, 12)
    assert reg.end_frame(0, [11, 12]) == []
    assert reg.end_frame(1, [12]) == [] and reg[11].missed == 1
    assert reg.end_frame(2, [12]) == [] and reg[11].missed == 2 and reg.lost_ids() == [11]
    assert reg.end_frame(3, [12]) == [11] and 11 not in reg
    assert reg[12].last_frame == 3 and reg[12].missed == 0
    # ids are never reused, even after a retirement
    assert reg.new(4).id == 13 and reg.max_id == 13
    assert reg.end_frame(4, []) == [] and reg.end_frame(5, []) == [] and reg.end_frame(6, []) == [12, 13]
    assert len(reg) == 0 and reg.new(7).id == 14


def test_carving_on_frames_larger_than_the_work_resolution(rng):
    # 384x512 frames are tracked at 240x320 (work_side 240); the carved object is brought
    # back to full resolution. Ids start at 101, so any blend of ids (an interpolated label
    # map) would show as ids that no track has.
    from scipy.ndimage import binary_dilation, binary_erosion

    big = [(1, 80, 40, 96, (220, 60, 60), 8, 4, 0, 99), (2, 220, 360, 80, (60, 60, 220), -4, -8, 0, 99)]
    sc = Scene(big, hw=(384, 512))
    vs, st, t0 = _tracked_for(sc, 4, rng, TrackerConfig(id_offset=100))
    assert st.work_hw == (240, 320) and sorted(t0.values()) == [101, 102, 103]
    img, gt = sc.frame(4)
    tf = vs.step(st, img, seg_from_gt(np.where(gt == 1, 0, gt), rng))  # object 1 swallowed
    assert set(np.unique(tf.labels).tolist()) <= set(t0.values())
    obj = gt == 1
    # (a few single pixels inside may fail the colour check along the flow and stay with the ground)
    assert (tf.labels[binary_erosion(obj, iterations=4)] == t0[1]).mean() > 0.99
    assert not (tf.labels[~binary_dilation(obj, iterations=4)] == t0[1]).any()
    assert (tf.labels[obj] == t0[1]).mean() > 0.9


def test_frame_with_300_segments_is_tracked(rng):
    # 300 textured 8x8 tiles panning right by 2 px per frame: more tracks than one OpenCV
    # remap call takes (128 channels in OpenCV 5), every tile keeps its id.
    H, W = 120, 200  # 15 x 25 tiles of 8x8 = 375 cells; 300 of them are segments
    base = np.zeros((H + 8, W + 16, 3), np.uint8)
    ids = np.zeros((H + 8, W + 16), np.int32)
    cells = [(r, c) for r in range(15) for c in range(25)][:300]
    for k, (r, c) in enumerate(cells):
        base[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = rng.integers(30, 230, 3)
        ids[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = k + 1
    vs = VideoSegmenter(None, TrackerConfig())
    st = vs.init_state()
    first = None
    for t in range(3):
        img = np.ascontiguousarray(base[:H, 2 * t:2 * t + W])
        gt = ids[:H, 2 * t:2 * t + W]
        tf = vs.step(st, img, seg_from_gt(gt, rng))
        m = gt_to_track(tf, gt)
        assert len(set(m.values())) == len(m) == len(np.unique(gt))
        if first is None:
            first = m
        else:
            common = set(first) & set(m)
            assert len(common) > 280 and all(m[g] == first[g] for g in common)


def test_matched_segment_that_is_mostly_background_is_carved(rng):
    # Frame 4: the background is cut in two; its left part (a third of the frame) is merged
    # with object 1. The background track takes the larger right part, object 1's track
    # the merged segment: it must keep only the object and leave the background piece.
    sc = Scene(TWO)
    vs, st, t0 = _tracked_for(sc, 4, rng)
    img, gt = sc.frame(4)
    left = (gt == 0) & (np.arange(gt.shape[1])[None, :] < 48)
    lab = np.where(left, 1, gt)  # 0 = right background, 1 = object 1 + left background, 2
    tf = vs.step(st, img, seg_from_gt(lab, rng))
    assert (tf.labels[gt == 1] == t0[1]).mean() > 0.85  # its warped pixels (the leading edge goes with the rest)
    assert (tf.labels[left] == t0[1]).mean() < 0.05
    assert (tf.labels[(gt == 0) & ~left] == t0[0]).mean() > 0.95


def test_a_frame_with_300_segments_is_linked():
    # OpenCV 5's remap takes at most 128 channels: nothing per track may go through one call
    # (the previous tracker warped one map per track and crashed above 128 tracks). 300
    # cells of distinct colours moving 1 px per frame keep their 300 ids.
    rng = np.random.default_rng(3)
    lab = (np.arange(120)[:, None] // 6) * 15 + np.arange(150)[None, :] // 10  # 20 x 15 cells
    colours = rng.integers(0, 255, (300, 3), dtype=np.uint8)
    maps = [np.roll(lab, t, 1) for t in range(3)]
    out = list(link_label_maps(maps, [colours[m] for m in maps], tracker()))
    assert [len(tf.track_ids) for tf in out] == [300, 300, 300]
    first = {v: int(out[0].labels[lab == v][0]) for v in range(300)}
    for tf, m in zip(out, maps):
        assert all(np.all(tf.labels[m == v] == first[v]) for v in range(300))


def test_a_track_carved_out_for_memory_frames_is_not_carved_any_more():
    # an object merged into the ground segment from frame 3 on: it is carved out (its id
    # kept) while the segmenter showed it within `memory` frames, then it is not: a track the
    # segmenter never shows again must not live on forever as a carved sliver (stuff tracks
    # of a segmenter that re-tiles the ground every frame did, and every frame got slower)
    lab = np.zeros((40, 40), np.int32)
    lab[10:20, 10:20] = 1
    maps = [lab] * 3 + [np.zeros_like(lab)] * 9
    frame = np.full((40, 40, 3), 30, np.uint8)
    frame[10:20, 10:20] = (220, 40, 40)  # still there to see: its look asks for carving
    cfg = tracker(flow="none", memory=3, correction_window=0)
    out = [tf.labels for tf in link_label_maps(maps, [frame] * 12, cfg)]
    obj = int(out[0][15, 15])
    assert obj != int(out[0][0, 0])
    carved = [bool((o[10:20, 10:20] == obj).all()) for o in out]
    assert carved == [True] * 6 + [False] * 6, carved  # 3 frames its own segment, 3 carved, then gone


def _scene_frames(sc: Scene, n: int, fake: "FakeSegmenter | None" = None) -> list:
    frames = []
    for t in range(n):
        img, gt = sc.frame(t)
        if fake is not None:
            fake.register(t, img, gt)
        frames.append((img, gt))
    return frames


def test_a_small_object_faster_than_half_its_size_keeps_its_id(rng):
    # a 24 px square moving 14 or 18 px a frame: the cheap flow falls behind it, and its
    # round trip agrees with that wrong flow, which pulls the square's id onto the ground;
    # the colour along the flow shows the square's pixels are not the ones it brings, so
    # the track counts as lost by the flow (the careful flow, then the motion model) and
    # the square keeps its id (without the colour check: 4 and 10 ids in 16 frames)
    for v in (14, 18):
        frames = _scene_frames(Scene([(1, 60, 10, 24, (220, 60, 60), 3, v, 0, 99)], hw=(160, 320)), 16)
        segs = [seg_from_gt(gt, rng) for _, gt in frames]
        out = list(VideoSegmenter(None, TrackerConfig()).iter_video([f for f, _ in frames], segs))
        assert len({gt_to_track(tf, gt)[1] for tf, (_, gt) in zip(out, frames)}) == 1, v


def test_auto_keyframes_carry_a_still_scene_up_to_the_gap_cap(rng):
    # nothing moves, so the flow carries every label: only the first frame and every
    # (max gap + 1)-th one are segmented; the ids hold through the carried frames
    sc = Scene([o[:5] + (0, 0) + o[7:] for o in TWO])
    fake = FakeSegmenter(sc)
    frames = _scene_frames(sc, 11, fake)
    vs = VideoSegmenter(fake, TrackerConfig(keyframe_every="auto", keyframe_max_gap=4))
    out = list(vs.iter_video(f for f, _ in frames))
    assert [t for t, tf in enumerate(out) if tf.keyframe] == [0, 5, 10]
    assert fake.calls == 3 and fake.batches == [1, 1, 1]  # decided frame by frame
    ids = [gt_to_track(tf, gt) for tf, (_, gt) in zip(out, frames)]
    assert all(m == ids[0] for m in ids)


def test_auto_keyframe_where_the_flow_loses_a_track(rng):
    # object 2 jumps 80 px at frame 4 (a cut the flow cannot follow): that frame is segmented
    # although the gap cap is far, and only that one; with the cover check off (coverage 0)
    # the jump is carried by flow and the square is lost
    objs = [(1, 30, 20, 40, (220, 60, 60), 1, 1, 0, 99), (2, 100, 60, 36, (60, 60, 220), 0, 0, 0, 3),
            (2, 100, 140, 36, (60, 60, 220), 0, 0, 4, 99)]
    frames = _scene_frames(Scene(objs, hw=(160, 240)), 8)
    segs = [seg_from_gt(gt, rng) for _, gt in frames]

    def keyframes_and_cover(coverage):
        cfg = TrackerConfig(keyframe_every="auto", keyframe_coverage=coverage, keyframe_max_gap=50)
        out = list(VideoSegmenter(None, cfg).iter_video([f for f, _ in frames], segs))
        obj = frames[5][1] == 2
        mine = out[5].labels == gt_to_track(out[5], frames[5][1])[2]
        return [t for t, tf in enumerate(out) if tf.keyframe], (mine & obj).sum() / (mine | obj).sum()

    keys, cover = keyframes_and_cover(0.9)
    assert keys == [0, 4] and cover > 0.9  # IoU of the square's track with the square
    keys, cover = keyframes_and_cover(0.0)
    assert keys == [0] and cover < 0.5


def test_auto_keyframes_see_the_flow_drift_off_an_object_as_bright_as_the_ground(rng):
    # a red square on green ground of the same grey level, moving 2 or 8 px a frame: the
    # cheap flow follows it only part of the way, and the labels it carries drift off the
    # square. Only colour shows it (in grey the square's trail looks like the ground), so
    # the frame is segmented before the square's track has drifted far; carried without
    # the check, the track ends on the ground (IoU 0.57 after 9 frames at 2 px, 0.01 after
    # 4 at 8 px)
    for v in (2, 8):
        objs = [(1, 40, 10, 30, (220, 60, 60), 0, v, 0, 99), (2, 100, 10, 30, (60, 60, 220), 0, 2, 0, 99)]
        frames = _scene_frames(Scene(objs, hw=(160, 320)), 10)
        segs = [seg_from_gt(gt, rng) for _, gt in frames]
        cfg = TrackerConfig(keyframe_every="auto", keyframe_max_gap=50)
        out = list(VideoSegmenter(None, cfg).iter_video([f for f, _ in frames], segs))
        ious = []
        for tf, (_, gt) in zip(out, frames):
            mine = tf.labels == gt_to_track(tf, gt)[1]
            ious.append(((mine & (gt == 1)).sum() / (mine | (gt == 1)).sum()))
        assert min(ious) > 0.8, (v, np.round(ious, 2))
        assert sum(tf.keyframe for tf in out) < 10  # frames the flow carries well are still carried


def test_auto_keyframes_chain_only_through_checked_flow(rng, monkeypatch):
    # the prediction of a lost track (moved at its last velocity into pixels whose flow
    # failed the forward-backward or the colour check) is a guess, not a chain: a frame
    # whose every prediction is such a guess is segmented, whatever it shows
    from temporal.engine.predict import Prediction

    sc = Scene([o[:5] + (0, 0) + o[7:] for o in TWO])
    frames = _scene_frames(sc, 3)
    segs = [seg_from_gt(gt, rng) for _, gt in frames]
    vs = VideoSegmenter(None, TrackerConfig(keyframe_every="auto", keyframe_max_gap=50))

    def guessed(state, gray, commit=True, small=None):
        return Prediction(state.prev.copy(), np.zeros(gray.shape + (2,), np.float32), {},
                          valid=np.zeros(gray.shape, bool))
    monkeypatch.setattr(vs.linker, "predict", guessed)
    out = list(vs.iter_video([f for f, _ in frames], segs))
    assert [tf.keyframe for tf in out] == [True, True, True]


@pytest.mark.parametrize("bad", ["x", 0, -2, 2.5, "4"])
def test_keyframe_every_takes_an_integer_or_auto(bad):
    from diffseg_core.errors import InputError

    with pytest.raises(InputError, match="keyframe_every"):
        TrackerConfig(keyframe_every=bad)
    with pytest.raises(InputError, match="keyframe_coverage"):
        TrackerConfig(keyframe_every="auto", keyframe_coverage=1.5)
    assert TrackerConfig(keyframe_every="auto").adaptive and not TrackerConfig(keyframe_every=3).adaptive
