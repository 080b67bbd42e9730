#!/usr/bin/env python3
"""Make `examples/example_clip.mp4`: a short synthetic video for the quick start (our own code).

24 frames of 320x192 (H.264 through PyAV, MPEG-4 Part 2 if no H.264 encoder): the scene of
`make_example.py` (sky, ground, grass, a striped box, a sun and a mottled rock) with the rock
rolling to the left, the sun rising and the camera panning slowly, so objects move, one
partly occludes another and the background shifts. Deterministic; numpy, scipy, PyAV.

Usage:
    python examples/make_example_clip.py [--out examples/example_clip.mp4] [--frames 24]
"""
from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import ndimage

H, W = 192, 320
PAD = 64  # the world is wider than the frame so the camera can pan


def _noise(rng: np.random.Generator, sigma: float, shape: tuple[int, int]) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


class Scene:
    """Static textures drawn once; `frame(t)` composes the moving objects."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        ww = W + PAD
        yy, xx = np.mgrid[0:H, 0:ww].astype(np.float64)
        self.horizon = 0.62 * H + 5 * np.sin(xx[0] / 29.0)
        ground = yy > self.horizon[None, :]
        t = yy / H
        sky = np.stack([110 + 90 * t, 160 + 60 * t, 235 - 20 * t], -1)
        soil = np.stack([120 - 40 * t, 95 - 30 * t, 60 - 20 * t], -1)
        bg = np.where(ground[..., None], soil, sky) + 6 * _noise(rng, 3, (H, ww))[..., None]
        grass = ground & (yy < self.horizon[None, :] + 20)
        streak = _noise(rng, 0.8, (1, ww))[0][None, :] * 18 + 10 * _noise(rng, 2, (H, ww))
        bg[grass] = np.stack([60 + streak, 150 + 1.5 * streak, 50 + 0.5 * streak], -1)[grass]
        box = (xx > 40) & (xx < 130) & (yy > 70) & (yy < self.horizon[None, :] + 8)
        stripes = 25 * np.sign(np.sin(yy / 4.0))
        bg[box] = np.stack([170 + stripes, 60 + stripes / 2, 55 + 0 * yy], -1)[box]
        self.bg = bg
        self.mottle = 22 * _noise(rng, 2.0, (H, ww))
        self.speckle = 8 * _noise(rng, 1.5, (H, ww))

    def frame(self, i: int, n: int) -> np.ndarray:
        """uint8 ``(H, W, 3)`` frame ``i`` of ``n``."""
        s = i / max(n - 1, 1)
        img = self.bg.copy()
        yy, xx = np.mgrid[0:H, 0:W + PAD].astype(np.float64)
        r = np.hypot(yy - (60 - 30 * s), xx - (250 + 20 * s))  # the sun rises to the right
        sun = r < 26
        img[sun] = (np.stack([255 - r, 205 - 1.5 * r, 60 + 0 * r], -1) + self.speckle[..., None])[sun]
        cx = 250 - 150 * s  # the rock rolls left, in front of the box near the end
        a = np.deg2rad(20 + 90 * s)
        u = ((xx - cx) * np.cos(a) + (yy - 140) * np.sin(a)) / 52
        v = (-(xx - cx) * np.sin(a) + (yy - 140) * np.cos(a)) / 30
        rock = u ** 2 + v ** 2 < 1
        img[rock] = np.stack([135 + self.mottle, 135 + self.mottle, 145 + self.mottle], -1)[rock]
        x0 = int(round(PAD * s))  # slow camera pan
        img = ndimage.gaussian_filter(img[:, x0:x0 + W], sigma=(0.7, 0.7, 0))
        return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_clip(path: Path, frames: int = 24, fps: int = 12, seed: int = 0) -> str:
    import av

    scene = Scene(seed)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        for i in range(frames):
            for pkt in stream.encode(av.VideoFrame.from_ndarray(scene.frame(i, frames), format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return codec


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).with_name("example_clip.mp4")))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--fps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    codec = write_clip(Path(a.out), a.frames, a.fps, a.seed)
    print(f"wrote {a.out} ({Path(a.out).stat().st_size // 1024} KB, {a.frames} frames {W}x{H}, {codec})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
