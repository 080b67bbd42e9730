"""Shared test fixtures: real-data location, tiny synthetic inputs, a fast fake segmenter.

The fake segmenter is importable as ``tests.conftest:fake_segmenter`` so that subprocess
ranks of ``diffseg run --segmenter-factory`` can build it too.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.types import Segmentation
from temporal.proposals import proposals_from_labels

REPO = Path(__file__).resolve().parents[1]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a ``python -m diffseg`` subprocess: this checkout first on the
    path, one OpenMP thread (tests run side by side), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def shared_root() -> "Path | None":
    """``$DIFFSEG_SHARED`` or the ``shared`` folder beside the repository, if present."""
    env = os.environ.get("DIFFSEG_SHARED")
    cand = Path(env) if env else REPO.parent / "shared"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<shared>/data`` with the real test data; skips the test when absent."""
    root = shared_root()
    if root is None or not (root / "data").is_dir():
        pytest.skip("shared test data not found (set DIFFSEG_SHARED)")
    return root / "data"


# ----------------------------------------------------------------------------- fake segmenter
class FakeSegmenter:
    """Deterministic stand-in for `DiffSegSegmenter`: segments = colour classes.

    Each pixel gets the index of its dominant RGB channel (0, 1, 2) or 3 when dark; present
    classes are relabelled 0..K-1. Proposals are the class masks pooled to a grid with
    ``min(H, W) // 8`` cells on the shorter side (`temporal.proposals.proposals_from_labels`).
    ``DIFFSEG_FAKE_DELAY`` seconds are slept per image (lets a test kill a run in the middle).
    """

    def __init__(self, config=None) -> None:
        self.config = config
        self.delay = float(os.environ.get("DIFFSEG_FAKE_DELAY", "0") or 0)
        self.calls = 0

    def segment(self, images, generator=None) -> list[Segmentation]:
        out = []
        for img in images:
            img = np.asarray(img)
            if self.delay:
                time.sleep(self.delay)
            self.calls += 1
            cls = np.argmax(img.astype(np.int16), axis=2).astype(np.int32)
            cls[img.max(axis=2) < 60] = 3
            present, labels = np.unique(cls, return_inverse=True)
            labels = labels.reshape(cls.shape).astype(np.int32)
            h, w = labels.shape
            props = proposals_from_labels(labels, len(present), side=max(1, min(h, w) // 8))
            out.append(Segmentation(labels=labels, proposals=props, image_hw=(h, w)))
        return out


def fake_segmenter(config=None) -> FakeSegmenter:
    """Factory for ``--segmenter-factory tests.conftest:fake_segmenter``."""
    return FakeSegmenter(config)


# ----------------------------------------------------------------------------- synthetic data
def write_frames(folder: Path, n: int, hw: tuple[int, int] = (64, 80), seed: int = 0) -> Path:
    """A folder of ``n`` JPEG-free PNG frames: a red square moving right over two bands."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = hw
    for t in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[:, : w // 3] = (30, 170, 40)
        a[:, w // 3:] = (40, 60, 190)
        x = 4 + 2 * t
        a[h // 4: h // 4 + h // 3, x: x + w // 4] = (220, 30, 30)
        a = np.clip(a.astype(np.int16) + rng.integers(0, 12, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{t:05d}.png")
    return folder


def colour_classes(path: Path) -> np.ndarray:
    """`FakeSegmenter`'s classes written out independently: int32 ``(H, W)`` for one picture,
    ``(T, H, W)`` for a folder of frames: the dominant RGB channel (0 red, 1 green, 2 blue),
    3 where the pixel is dark. In a `write_frames` folder the classes keep their ids in every
    frame: the tracks a perfect linker of the fake segments must give."""
    from PIL import Image

    def one(f: Path) -> np.ndarray:
        rgb = np.asarray(Image.open(f).convert("RGB"))
        return np.where(rgb.max(axis=2) < 60, 3, np.argmax(rgb, axis=2)).astype(np.int32)

    if path.is_dir():
        return np.stack([one(f) for f in sorted(path.glob("*.png"))])
    return one(path)


def write_images(folder: Path, names: "list[str]", hw: tuple[int, int] = (64, 64), seed: int = 1) -> list[Path]:
    """PNG photos with two or three colour regions."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i, name in enumerate(names):
        h, w = hw
        a = np.zeros((h, w, 3), np.uint8)
        a[:, : w // 2] = (200, 40, 30)
        a[h // 3:, w // 2:] = (30, 40, 200 - 20 * i)
        a = np.clip(a.astype(np.int16) + rng.integers(0, 12, a.shape), 0, 255).astype(np.uint8)
        p = folder / f"{name}.png"
        Image.fromarray(a).save(p)
        out.append(p)
    return out


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    return write_frames(tmp_path / "clip" / "frames", 10)


@pytest.fixture
def images_dir(tmp_path: Path) -> Path:
    write_images(tmp_path / "photos", ["cat", "dog"])
    return tmp_path / "photos"


def folder_digest(folder: Path) -> str:
    """A hash of every file's name and bytes under ``folder`` (a run left as it was)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()
