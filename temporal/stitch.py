"""Stitching track ids across chunks of one video (the distributed runner).

Two chunks that share ``n`` overlapping frames are tracked independently; their ids are
reconciled by one Hungarian assignment of the IoU accumulated over the overlap.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .matching import hungarian_assign, iou_from_overlap, overlap_matrix


def stitch_ids(prev_overlap_labels: Sequence[np.ndarray], next_overlap_labels: Sequence[np.ndarray],
               min_iou: float = 0.3, new_id_start: "int | None" = None) -> dict[int, int]:
    """Map the next chunk's track ids onto the previous chunk's ids.

    Args:
        prev_overlap_labels: int ``(H, W)`` track-id maps (0 = none) of the previous chunk on
            the overlapping frames, in time order.
        next_overlap_labels: the next chunk's maps of the same frames.
        min_iou: pairs whose accumulated IoU (sum of intersections / sum of unions over the
            overlap) is below this stay unmatched.
        new_id_start: first id for the next chunk's unmatched ids. None: an unmatched id keeps
            its own value unless the previous chunk uses it, in which case it gets
            ``max(all ids seen) + 1, + 2, ...`` (start chunk trackers with
            ``TrackerConfig(id_offset=...)`` so their ids never collide).

    Returns:
        ``{next_id: id_to_use}`` for every id > 0 present in ``next_overlap_labels``. Ids of
        the next chunk that only appear after the overlap are not listed: map them with
        the same rule (`apply_mapping` keeps unlisted ids).
    """
    if len(prev_overlap_labels) != len(next_overlap_labels):
        raise ValueError(
            f"overlaps differ in length: {len(prev_overlap_labels)} vs {len(next_overlap_labels)} frames")
    prev_ids = np.unique(np.concatenate([np.unique(a) for a in prev_overlap_labels] or [np.zeros(0, int)]))
    next_ids = np.unique(np.concatenate([np.unique(a) for a in next_overlap_labels] or [np.zeros(0, int)]))
    prev_ids, next_ids = prev_ids[prev_ids > 0], next_ids[next_ids > 0]
    inter = np.zeros((len(prev_ids), len(next_ids)), np.int64)
    area_p = np.zeros(len(prev_ids), np.int64)
    area_n = np.zeros(len(next_ids), np.int64)
    for a, b in zip(prev_overlap_labels, next_overlap_labels):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            raise ValueError(f"overlap frames differ in size: {a.shape} vs {b.shape}")
        ia = np.where(a > 0, np.searchsorted(prev_ids, a), -1)
        ib = np.where(b > 0, np.searchsorted(next_ids, b), -1)
        inter += overlap_matrix(ia, len(prev_ids), ib, len(next_ids))
        area_p += np.bincount(ia[ia >= 0], minlength=len(prev_ids))
        area_n += np.bincount(ib[ib >= 0], minlength=len(next_ids))
    iou = iou_from_overlap(inter, area_p, area_n)
    asg = hungarian_assign(1.0 - iou, allowed=iou >= min_iou)
    mapping = {int(next_ids[c]): int(prev_ids[r]) for r, c in zip(asg.rows, asg.cols)}
    used = set(prev_ids.tolist()) | set(mapping.values())
    nxt = new_id_start if new_id_start is not None else int(max([0, *prev_ids.tolist(), *next_ids.tolist()])) + 1
    for c in asg.unmatched_cols:
        nid = int(next_ids[c])
        if new_id_start is None and nid not in used:
            mapping[nid] = nid
        else:
            while nxt in used:
                nxt += 1
            mapping[nid] = nxt
        used.add(mapping[nid])
    return mapping


def apply_mapping(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Relabel an int ``(H, W)`` track-id map with ``mapping`` (unlisted ids unchanged).

    Returns:
        int32 ``(H, W)``.
    """
    labels = np.asarray(labels)
    if not mapping:
        return labels.astype(np.int32)
    keys = np.array(sorted(mapping), dtype=np.int64)
    vals = np.array([mapping[k] for k in keys], dtype=np.int64)
    pos = np.clip(np.searchsorted(keys, labels), 0, len(keys) - 1)
    hit = keys[pos] == labels
    return np.where(hit, vals[pos], labels).astype(np.int32)
