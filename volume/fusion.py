"""Multi-axis fusion (`--axes all`): three linked labellings of one volume -> one labelling.

Each axis' labelling is matched to the reference labelling (the through-plane axis) by one
Hungarian assignment on the voxel-overlap (Dice) table, so that equal ids mean the same
structure; then every voxel takes the majority of the three ids (two of three agree), or the
reference id when all three differ. Unmatched ids of the other axes never win a vote
alone, so the fused result never has more structures than the reference; agreement between
the two cross-plane labellings can still correct the reference's linking errors (a
structure merged into a neighbour over several slices, a boundary off by a slice).
"""
from __future__ import annotations

import numpy as np

from .evaluate import _match, contingency
from .geometry import slabs



def match_to_reference(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    """LUT mapping ``other``'s ids to ``ref``'s ids by Hungarian on overlap Dice.

    Args:
        ref: int ``(D, H, W)`` reference ids (0 = none).
        other: int ``(D, H, W)`` ids of another labelling of the same volume.

    Returns:
        int32 ``(other.max() + 1,)``: ``lut[o]`` = matched reference id, or ``-1`` when ``o``
        has no partner (and ``lut[0] = 0``).
    """
    table, r_ids, o_ids = contingency(ref, other)
    # _match matches rows (ref) to columns (other).
    match = _match(table)
    top = int(o_ids.max()) if len(o_ids) else 0
    lut = np.full(top + 1, -1, np.int32)
    lut[0] = 0
    rows = np.flatnonzero(match >= 0)
    lut[o_ids[match[rows]]] = r_ids[rows]
    return lut


def fuse_majority(ref: np.ndarray, others: "list[np.ndarray]") -> np.ndarray:
    """Fuse a reference labelling with two others by matching + majority vote, in place.

    Args:
        ref: int32 ``(D, H, W)`` reference ids; overwritten with the fused ids.
        others: two int ``(D, H, W)`` labellings of the same volume.

    Returns:
        ``ref`` (fused).
    """
    if len(others) != 2:
        raise ValueError(f"majority fusion needs exactly two other labellings; got {len(others)}")
    luts = [match_to_reference(ref, o) for o in others]
    for sl in slabs(ref.shape):
        r = ref[sl]
        a = luts[0][np.asarray(others[0][sl])]
        b = luts[1][np.asarray(others[1][sl])]
        agree = (a == b) & (a >= 0) & (a != r)
        r[agree] = a[agree]
    return ref
