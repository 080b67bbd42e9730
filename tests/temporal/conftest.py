"""Fixtures of the temporal tests: textured moving squares with exact ground truth."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.types import Segmentation
from temporal.proposals import proposals_from_labels


def shared_dir() -> Path:
    env = os.environ.get("DIFFSEG_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def texture(rng: np.random.Generator, h: int, w: int, base: tuple[int, int, int]) -> np.ndarray:
    """Smooth random texture around colour ``base``: uint8 (h, w, 3)."""
    import cv2

    noise = rng.normal(0, 40, (h, w, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 1.5)
    return np.clip(np.array(base, np.float32) + noise, 0, 255).astype(np.uint8)


class Scene:
    """Squares moving with constant velocity over a textured background.

    ``objects``: list of (gt id, y, x, size, colour, vy, vx, first frame, last frame).
    """

    def __init__(self, objects, hw=(96, 128), seed=0):
        self.rng = np.random.default_rng(seed)
        self.hw = hw
        self.objects = objects
        self.bg = texture(self.rng, hw[0], hw[1], (90, 110, 90))
        self.tex = {o[0]: texture(self.rng, o[3], o[3], o[4]) for o in objects}

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (H, W, 3) image, int32 (H, W) ground truth ids, 0 = background)."""
        img = self.bg.copy()
        gt = np.zeros(self.hw, np.int32)
        H, W = self.hw
        for gid, y, x, s, _, vy, vx, t0, t1 in self.objects:
            if not t0 <= t <= t1:
                continue
            yy, xx = int(round(y + vy * t)), int(round(x + vx * t))
            y0, x0, y1, x1 = max(yy, 0), max(xx, 0), min(yy + s, H), min(xx + s, W)
            if y1 <= y0 or x1 <= x0:
                continue
            img[y0:y1, x0:x1] = self.tex[gid][y0 - yy:y1 - yy, x0 - xx:x1 - xx]
            gt[y0:y1, x0:x1] = gid
        return img, gt


def seg_from_gt(gt: np.ndarray, rng: np.random.Generator, shuffle: bool = True) -> Segmentation:
    """A Segmentation whose segments are the GT regions (background included), with segment
    indices shuffled per frame and proposals derived from the masks."""
    vals = np.unique(gt)
    perm = rng.permutation(len(vals)) if shuffle else np.arange(len(vals))
    lut = np.zeros(int(vals.max()) + 1, np.int32)
    lut[vals] = perm
    lab = lut[gt]
    return Segmentation(labels=lab, proposals=proposals_from_labels(lab, len(vals), side=16))


class FakeSegmenter:
    """Stand-in for DiffSegSegmenter: returns the GT regions of a `Scene` as segments."""

    def __init__(self, scene: Scene, seed: int = 0):
        self.scene = scene
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.batches: list[int] = []
        self._lookup = {}

    def register(self, t: int, img: np.ndarray, gt: np.ndarray) -> None:
        self._lookup[img.tobytes()] = gt

    def segment(self, images):
        self.calls += len(images)
        self.batches.append(len(images))
        return [seg_from_gt(self._lookup[im.tobytes()], self.rng) for im in images]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def tracker(keyframe_every: int = 1, batch_size: int = 0, id_offset: int = 0, **knobs):
    """A `TrackerConfig` on the video preset with engine knobs changed by name
    (``tracker(memory=2, flow="none")``)."""
    from temporal.config import TrackerConfig
    from temporal.engine import video

    return TrackerConfig(engine=video().set(**knobs), keyframe_every=keyframe_every, batch_size=batch_size,
                         id_offset=id_offset)
