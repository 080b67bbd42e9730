#!/usr/bin/env python3
"""Make `docs/demo.png`: the README's picture, three frames of the quick start's overlay.

Runs the quick start's main job (`diffseg video examples/example_clip.mp4 --model tiny-random
--size 128`) into a temporary folder and puts frames 0, 12 and 23 of its `overlay.mp4` side by
side. The tiny model's segments are meaningless (random weights); the picture shows what the
pipeline writes. Deterministic up to the video codec; our own code and data only.

Usage:
    python examples/make_readme_picture.py [--out docs/demo.png]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "demo.png")
    a = ap.parse_args(argv)
    import av
    from PIL import Image

    from diffseg.cli import main as cli

    with tempfile.TemporaryDirectory() as d:
        rc = cli(["video", str(HERE / "example_clip.mp4"), "-o", d, "--model", "tiny-random", "--size", "128", "-q"])
        if rc != 0:
            return rc
        with av.open(str(Path(d) / "overlay.mp4")) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    picks = [frames[i] for i in (0, len(frames) // 2, len(frames) - 1)]
    gap = np.full((picks[0].shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for p in picks for x in (p, gap)][:-1], axis=1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(row).save(a.out, optimize=True)
    print(f"wrote {a.out} ({row.shape[1]}x{row.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
