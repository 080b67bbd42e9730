"""benchmarks/volume_linking_bench.py: the stack family that stands for a microscopist's
classical nuclei pipeline (its figures are only worth something if it segments nuclei)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("skimage")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from volume_linking_bench import nuclei_watershed  # noqa: E402


def two_touching_nuclei(depth: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Two bright balls of radius 12 whose sections touch, in a dim stack whose top and
    bottom slices show only their faint blur; and their labels."""
    z, y, x = np.mgrid[:depth, :64, :96].astype(np.float32)
    lab = np.zeros(z.shape, np.int32)
    for i, cx in enumerate((34.0, 58.0)):
        lab[((y - 32) ** 2 + (x - cx) ** 2 + (3 * (z - depth // 2)) ** 2) <= 12 ** 2] = i + 1
    grey = np.where(lab > 0, 200, 20).astype(np.uint8)
    grey[[0, -1]] = np.where(lab[[1, -2]] > 0, 45, 20)  # out-of-focus light, no nucleus
    lab[[0, -1]] = 0
    return grey, lab


def test_touching_nuclei_are_split_and_the_empty_slices_stay_empty():
    grey, lab = two_touching_nuclei()
    out = nuclei_watershed(8)(grey)
    assert out.shape == grey.shape and out.dtype == np.int32
    assert not out[[0, -1]].any()  # one threshold for the stack: no blur segmented above and below
    assert ((out > 0) == (lab > 0)).mean() > 0.97  # 0 is the background
    for z in range(2, 7):  # the middle slices: one segment per nucleus, not one for both
        left, right = (np.bincount(out[z][lab[z] == i]).argmax() for i in (1, 2))
        assert left > 0 and right > 0 and left != right
