"""Slicing geometry: the through-plane axis, in-plane spacing, square-pixel resampling."""
from __future__ import annotations

import cv2
import numpy as np

from diffseg_core.errors import InputError


#: Whole-volume passes go slab by slab, each slab at most this many voxels (16 slices of
#: 1024 x 1024): bounded temporaries whatever the size of a slice.
SLAB_VOXELS = 1 << 24


def slabs(shape: "tuple[int, ...]") -> "list[slice]":
    """Consecutive slabs of whole slices along axis 0 covering ``shape``, each at most
    `SLAB_VOXELS` voxels (one slice when a slice is bigger)."""
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(shape[1:]))))
    return [slice(z, min(z + step, int(shape[0]))) for z in range(0, int(shape[0]), step)]


def through_plane_axis(spacing: tuple[float, float, float]) -> int:
    """Axis with the largest spacing (the acquisition's slice direction); ties -> the first.

    Args:
        spacing: ``(dz, dy, dx)``.

    Returns:
        0, 1 or 2.
    """
    sp = np.asarray(spacing, dtype=np.float64)
    # Spacings within 1e-3 relative count as equal (float noise in headers).
    top = sp.max()
    return int(np.flatnonzero(sp >= top * (1 - 1e-3))[0])


def inplane_spacing(spacing: tuple[float, float, float], axis: int) -> tuple[float, float]:
    """``(row, column)`` spacing of slices taken along ``axis``."""
    rest = [float(s) for i, s in enumerate(spacing) if i != axis]
    return rest[0], rest[1]


def square_shape(hw: tuple[int, int], pixel: tuple[float, float]) -> tuple[int, int]:
    """Slice size after resampling to square pixels of the finer in-plane spacing.

    Args:
        hw: ``(rows, columns)``.
        pixel: ``(row spacing, column spacing)``.

    Returns:
        ``(rows', columns')``, each >= 1. Equal spacings return ``hw``.
    """
    h, w = hw
    sy, sx = pixel
    if abs(sy - sx) <= 1e-3 * max(sy, sx):
        return int(h), int(w)
    s = min(sy, sx)
    return max(1, int(round(h * sy / s))), max(1, int(round(w * sx / s)))


def resize_gray(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Linear resize of an ``(H, W)`` or ``(H, W, C)`` uint8 image to ``hw`` (no-op if equal)."""
    if tuple(img.shape[:2]) == tuple(hw):
        return img
    return cv2.resize(img, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR)


def resize_nearest(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an int label map to ``hw`` (int32, no-op if equal)."""
    if tuple(labels.shape) == tuple(hw):
        return labels.astype(np.int32, copy=False)
    lab = labels.astype(np.int32, copy=False)
    if int(lab.max(initial=0)) < 2 ** 24 and int(lab.min(initial=0)) >= -(2 ** 24):
        return cv2.resize(lab, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_NEAREST)
    raise InputError(f"label ids out of the range cv2 can resize: {lab.min()}..{lab.max()}")


def take_slice(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    """View of slice ``index`` along ``axis`` of a ``(D, H, W)`` array."""
    sl: list = [slice(None)] * 3
    sl[axis] = int(index)
    return arr[tuple(sl)]
