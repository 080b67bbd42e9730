from __future__ import annotations

import numpy as np

from temporal.stitch import apply_mapping, stitch_ids


def test_stitch_maps_overlapping_ids_and_allocates_new_ones():
    a = np.zeros((2, 6, 6), np.int32)
    a[:, :3, :] = 4      # previous chunk: track 4 on top, 9 at the bottom
    a[:, 3:, :] = 9
    b = np.zeros((2, 6, 6), np.int32)
    b[:, :3, :] = 101    # next chunk: the same regions, other ids, plus a new object 103
    b[:, 3:, :] = 102
    b[1, 0, 0] = 103
    m = stitch_ids(list(a), list(b))
    assert m[101] == 4 and m[102] == 9
    assert m[103] == 103  # unmatched id kept: it collides with nothing
    m2 = stitch_ids(list(a), list(b), new_id_start=50)
    assert m2[103] == 50
    relabeled = apply_mapping(b[1], m)
    assert relabeled.dtype == np.int32
    np.testing.assert_array_equal(relabeled[3:], 9)
    assert relabeled[0, 0] == 103 and relabeled[0, 1] == 4


def test_stitch_unmatched_colliding_id_gets_fresh_id_and_low_iou_is_not_matched():
    a = np.zeros((1, 4, 4), np.int32)
    a[0, :, :2] = 5
    b = np.zeros((1, 4, 4), np.int32)
    b[0, :, 2:] = 5  # same number, different region: must not stay 5
    m = stitch_ids(list(a), list(b))
    assert m[5] != 5 and m[5] > 5


def test_stitch_accumulates_over_frames():
    # frame 0 favours pairing 1->7, frames 1-2 favour 1->8; the sum decides
    a = np.zeros((3, 4, 4), np.int32)
    b = np.zeros((3, 4, 4), np.int32)
    a[:, :2] = 1
    b[0, :2] = 7
    b[1:, :2] = 8
    m = stitch_ids(list(a), list(b))
    assert m[8] == 1 and m[7] != 1


def test_stitch_min_iou_by_hand():
    # prev id 5 = columns 0-4, next id 7 = columns 3-7: 2 shared columns of 8, IoU 0.25
    a = np.zeros((2, 3, 10), np.int32)
    a[:, :, 0:5] = 5
    b = np.zeros((2, 3, 10), np.int32)
    b[:, :, 3:8] = 7
    assert stitch_ids(list(a), list(b), new_id_start=20) == {7: 20}   # 0.25 < 0.3: a new id
    assert stitch_ids(list(a), list(b), min_iou=0.25) == {7: 5}       # gate at 0.25: joined
    assert stitch_ids(list(a), list(b), min_iou=0.26, new_id_start=20) == {7: 20}
