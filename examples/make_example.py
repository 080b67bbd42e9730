#!/usr/bin/env python3
"""Make `examples/shapes.png`: a small synthetic but natural-looking test image (our own code).

A 384x256 RGB scene: a sky-to-ground gradient background with a soft horizon, a textured
"sun" disc, a striped box, a rotated ellipse with mottled texture and a grassy band. The
regions have distinct colours and textures so a real Stable Diffusion model gives sensible
segments. Deterministic (seeded); only numpy, scipy and Pillow.

Usage:
    python examples/make_example.py [--out examples/shapes.png] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

H, W = 256, 384


def smooth_noise(rng: np.random.Generator, sigma: float, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """float ``(H, W)`` band-limited noise with zero mean and unit std."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-12)


def make_scene(seed: int = 0) -> np.ndarray:
    """uint8 ``(256, 384, 3)`` RGB scene."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    # Background: sky gradient on top, earthy ground below a wavy horizon.
    horizon = 0.62 * H + 6 * np.sin(xx[0] / 37.0) + 4 * smooth_noise(rng, 20, (1, W))[0]
    ground = yy > horizon[None, :]
    t = yy / H
    sky = np.stack([110 + 90 * t, 160 + 60 * t, 235 - 20 * t], -1)
    soil = np.stack([120 - 40 * t, 95 - 30 * t, 60 - 20 * t], -1)
    img = np.where(ground[..., None], soil, sky)
    img += 6 * smooth_noise(rng, 3)[..., None]
    # Grass band along the horizon: vertical streaks.
    grass = ground & (yy < horizon[None, :] + 28)
    streaks = smooth_noise(rng, 0.8, (1, W))[0][None, :] * 18 + 10 * smooth_noise(rng, 2)
    img[grass] = np.stack([60 + streaks, 150 + 1.5 * streaks, 50 + 0.5 * streaks], -1)[grass]
    # Sun: warm disc with a radial falloff and speckle.
    r = np.hypot(yy - 55, xx - 300)
    sun = r < 34
    img[sun] = (np.stack([255 - r, 205 - 1.5 * r, 60 + 0 * r], -1) + 8 * smooth_noise(rng, 1.5)[..., None])[sun]
    # Striped box (a "building") standing on the ground.
    box = (xx > 40) & (xx < 150) & (yy > 95) & (yy < horizon[None, :] + 10)
    stripes = 25 * np.sign(np.sin(yy / 5.0))
    img[box] = np.stack([170 + stripes, 60 + stripes / 2, 55 + 0 * yy], -1)[box]
    # Rotated ellipse (a "rock") with mottled texture.
    a = np.deg2rad(20)
    u = ((xx - 235) * np.cos(a) + (yy - 185) * np.sin(a)) / 70
    v = (-(xx - 235) * np.sin(a) + (yy - 185) * np.cos(a)) / 38
    rock = u ** 2 + v ** 2 < 1
    mottle = 22 * smooth_noise(rng, 2.5)
    img[rock] = np.stack([135 + mottle, 135 + mottle, 145 + mottle], -1)[rock]
    # Soft shading so edges are not perfectly synthetic.
    img = ndimage.gaussian_filter(img, sigma=(0.7, 0.7, 0))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).with_name("shapes.png")))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    Image.fromarray(make_scene(a.seed)).save(a.out, optimize=True)
    print(f"wrote {a.out} ({Path(a.out).stat().st_size // 1024} KB, {W}x{H})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
