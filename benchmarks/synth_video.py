"""Synthetic videos with exact ground truth, and DiffSeg-like per-frame segmentations.

`SynthVideo`: textured shapes moving over a textured, slowly panning background, rendered
as real RGB images (so optical flow works): occlusions (depth order), objects entering and
leaving the frame, fast motion. Frames are generated on demand (`frame(t)`), so a
2,000-frame video costs no memory.

`diffseg_like(gt, rng)`: turns a ground-truth id map into a per-frame segmentation that
behaves like DiffSeg's: segment numbers shuffled every frame, the background split into
several "stuff" segments that change from frame to frame, boundary jitter, occasional
splits and merges, spurious fragments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np


def smooth_texture(rng: np.random.Generator, h: int, w: int, mean: np.ndarray, contrast: float = 45.0,
                   scale: int = 24) -> np.ndarray:
    """uint8 ``(h, w, 3)`` colour texture: low-frequency blobs plus fine grain around ``mean``."""
    lo = rng.normal(0, 1, (max(2, h // scale), max(2, w // scale), 3)).astype(np.float32)
    lo = cv2.resize(lo, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (h, w, 3)).astype(np.float32), (0, 0), 1.0)
    img = mean[None, None, :] + contrast * lo + 0.5 * contrast * fine
    return np.clip(img, 0, 255).astype(np.uint8)


def shape_mask(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """bool ``(size, size)``: an ellipse, a rectangle or a blob."""
    m = np.zeros((size, size), np.uint8)
    c = size // 2
    if kind == "ellipse":
        cv2.ellipse(m, (c, c), (c - 1, int(c * rng.uniform(0.5, 0.95))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == "rect":
        a, b = int(c * rng.uniform(0.6, 0.95)), int(c * rng.uniform(0.5, 0.95))
        m[c - b:c + b, c - a:c + a] = 1
    else:
        ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
        rad = c * rng.uniform(0.55, 0.95, 9)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


@dataclass
class SynthObject:
    """One moving shape: appears at ``t_in``, leaves at ``t_out``; z orders occlusion."""

    gid: int
    mask: np.ndarray
    tex: np.ndarray
    y0: float
    x0: float
    vy: float
    vx: float
    z: int
    t_in: int = 0
    t_out: int = 10 ** 9


@dataclass
class SynthVideo:
    """A synthetic sequence; see module docstring.

    Args:
        n_frames: length.
        hw: frame size ``(H, W)``.
        n_objects: moving shapes.
        speed: (min, max) pixels per frame.
        enter_leave: some objects enter after the start and leave before the end.
        pan: background pan in pixels per frame (camera motion).
        seed: everything is deterministic given the seed.
    """

    n_frames: int = 80
    hw: tuple[int, int] = (480, 854)
    n_objects: int = 4
    speed: tuple[float, float] = (2.0, 8.0)
    enter_leave: bool = False
    pan: tuple[float, float] = (0.3, 0.8)
    seed: int = 0
    size: tuple[int, int] = (70, 160)
    objects: list = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        H, W = self.hw
        self._margin = int(max(abs(self.pan[0]), abs(self.pan[1])) * self.n_frames) + 4
        self.bg = smooth_texture(rng, H + self._margin, W + self._margin, rng.uniform(60, 190, 3), 40, 40)
        kinds = ["ellipse", "rect", "blob"]
        hues = np.linspace(0, 180, self.n_objects, endpoint=False) + rng.uniform(0, 30)
        for i in range(self.n_objects):
            s = int(rng.integers(self.size[0], self.size[1]))
            hsv = np.uint8([[[int(hues[i]) % 180, int(rng.integers(150, 255)), int(rng.integers(130, 240))]]])
            mean = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
            tex = smooth_texture(rng, s, s, mean, 30, 12)
            sp = rng.uniform(*self.speed)
            ang = rng.uniform(0, 2 * np.pi)
            t_in, t_out = 0, 10 ** 9
            y0, x0 = rng.uniform(0, H - s), rng.uniform(0, W - s)
            if self.enter_leave and i % 2 == 1:
                t_in = int(rng.integers(5, max(6, self.n_frames // 3)))
                t_out = int(rng.integers(2 * self.n_frames // 3, self.n_frames - 2))
            self.objects.append(SynthObject(i + 1, shape_mask(rng, s, kinds[i % 3]), tex, y0, x0,
                                            sp * np.sin(ang), sp * np.cos(ang), int(rng.permutation(100)[0]),
                                            t_in, t_out))

    def _pos(self, o: SynthObject, t: int) -> tuple[int, int]:
        """Position with bouncing off the frame borders (objects stay mostly visible)."""
        H, W = self.hw
        s = o.mask.shape[0]

        def bounce(p0: float, v: float, lo: float, hi: float) -> float:
            span = hi - lo
            p = (p0 - lo + v * t) % (2 * span)
            return lo + (p if p <= span else 2 * span - p)

        return int(round(bounce(o.y0, o.vy, -s * 0.3, H - s * 0.7))), int(round(bounce(o.x0, o.vx, -s * 0.3, W - s * 0.7)))

    def frame(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(uint8 (H, W, 3) image, int32 (H, W) ground truth: object id, 0 = background)``."""
        H, W = self.hw
        oy = int(round(self._margin / 2 + self.pan[0] * (t - self.n_frames / 2)))
        ox = int(round(self._margin / 2 + self.pan[1] * (t - self.n_frames / 2)))
        oy = min(max(oy, 0), self._margin)
        ox = min(max(ox, 0), self._margin)
        img = self.bg[oy:oy + H, ox:ox + W].copy()
        gt = np.zeros((H, W), np.int32)
        for o in sorted(self.objects, key=lambda o: o.z):
            if not o.t_in <= t < o.t_out:
                continue
            y, x = self._pos(o, t)
            s = o.mask.shape[0]
            y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + s, H), min(x + s, W)
            if y1 <= y0 or x1 <= x0:
                continue
            m = o.mask[y0 - y:y1 - y, x0 - x:x1 - x]
            img[y0:y1, x0:x1][m] = o.tex[y0 - y:y1 - y, x0 - x:x1 - x][m]
            gt[y0:y1, x0:x1][m] = o.gid
        return img, gt

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for t in range(self.n_frames):
            yield self.frame(t)


@dataclass(frozen=True)
class Degradation:
    """How `diffseg_like` corrupts ground truth (probabilities are per object per frame)."""

    n_stuff: tuple[int, int] = (3, 6)
    jitter_px: float = 2.5
    p_split: float = 0.08
    p_merge: float = 0.05
    n_fragments: tuple[int, int] = (0, 3)
    fragment_px: tuple[int, int] = (4, 14)


def diffseg_like(gt: np.ndarray, rng: np.random.Generator, deg: Degradation = Degradation()) -> np.ndarray:
    """A DiffSeg-like per-frame segmentation of a ground-truth id map.

    Args:
        gt: int ``(H, W)`` object ids, 0 = background.
        rng: random generator (seeded by the caller).

    Returns:
        int32 ``(H, W)`` segment labels ``0..K-1`` (numbers shuffled per frame).
    """
    H, W = gt.shape
    scale = max(H, W) / 854
    # boundary jitter: warp the GT with a smooth random displacement field
    amp = deg.jitter_px * scale
    dx = cv2.resize(rng.normal(0, amp, (max(2, H // 40), max(2, W // 40))).astype(np.float32), (W, H),
                    interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, amp, (max(2, H // 40), max(2, W // 40))).astype(np.float32), (W, H),
                    interpolation=cv2.INTER_CUBIC)
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    lab = cv2.remap(gt.astype(np.float32), gx + dx, gy + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    lab = lab.astype(np.int64)
    objs = [int(v) for v in np.unique(lab) if v > 0]
    nxt = int(max(objs, default=0)) + 1
    # background "stuff": Voronoi cells of random seeds, different every frame
    k = int(rng.integers(deg.n_stuff[0], deg.n_stuff[1] + 1))
    sy, sx = rng.uniform(0, H, k), rng.uniform(0, W, k)
    ds = 8
    cy, cx = np.meshgrid(np.arange(0, H, ds) + ds / 2, np.arange(0, W, ds) + ds / 2, indexing="ij")
    d = (cy[None] - sy[:, None, None]) ** 2 + (cx[None] - sx[:, None, None]) ** 2
    cell = cv2.resize(np.argmin(d, 0).astype(np.float32), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)
    stuff = nxt + cell
    bgm = lab == 0
    lab[bgm] = stuff[bgm]
    nxt += k
    for o in objs:
        m = lab == o
        r = rng.random()
        if r < deg.p_split:
            ys, xs = np.nonzero(m)
            ang = rng.uniform(0, np.pi)
            side = (ys - ys.mean()) * np.cos(ang) - (xs - xs.mean()) * np.sin(ang) > 0
            lab[ys[side], xs[side]] = nxt
            nxt += 1
        elif r < deg.p_split + deg.p_merge:
            ring = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~m
            nb = lab[ring]
            nb = nb[nb >= objs[-1] + 1] if objs else nb
            if nb.size:
                lab[m] = np.bincount(nb).argmax()
    for _ in range(int(rng.integers(deg.n_fragments[0], deg.n_fragments[1] + 1))):
        r = int(rng.integers(deg.fragment_px[0], deg.fragment_px[1] + 1) * scale) + 1
        cy_, cx_ = int(rng.integers(0, H)), int(rng.integers(0, W))
        frag = np.zeros((H, W), np.uint8)
        cv2.circle(frag, (cx_, cy_), r, 1, -1)
        lab[frag.astype(bool)] = nxt
        nxt += 1
    vals, inv = np.unique(lab, return_inverse=True)
    perm = rng.permutation(len(vals))
    return perm[inv.reshape(H, W)].astype(np.int32)
