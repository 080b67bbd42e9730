#!/usr/bin/env python3
"""Peak memory on huge images, each measurement in its own process.

    python benchmarks/bench_memory.py [--side 8000] [--side 16000]      # the overlay alone
    python benchmarks/bench_memory.py --image 16000                     # all of `diffseg image`
    python benchmarks/bench_memory.py --tiff-stack 300                  # reading a big TIFF stack

``--side``: `diffseg_core.io.overlay` (row blocks) beside the whole-image formula it
replaced, on the same synthetic image: the inputs' size, the peak RSS above the process's
RSS before the call (ru_maxrss) and the wall time; the two outputs must be equal.

``--image``: `diffseg image` end to end (read the PNG, tiny-random model at --size 64,
NMS to full size, labels PNG, overlay PNG) on a synthetic N x N PNG: peak RSS of the
whole process and of the process once the model is loaded (the model's own memory does
not depend on the image), seconds, and the image and int32 label sizes for scale.
Target (issue 17): a 16000x16000 image within 2 GB in all.

``--tiff-stack D``: a D x 1024 x 1024 uint16 stack written uncompressed (as Fiji saves
ImageJ hyperstacks) and zlib-compressed; `volume.io.read_volume` then every slice read as
`diffseg volume` reads them (`slice_values`), in a fresh process each: peak RSS above the
process's start (VmHWM) and the peak of its anonymous memory (RssAnon, sampled per slice:
the memory the process holds itself, not the file pages a memory map brings in, which the
kernel may drop at any time), beside the stack's size (issue 16: big TIFFs were read whole).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[3])
from diffseg_core import io as dio

def whole_image(image, labels):  # the formula before the row blocks (reference)
    col = dio.label_colors(labels).astype(np.float32)
    out = image.astype(np.float32)
    out = 0.5 * out + 0.5 * col
    out[dio.label_boundaries(labels)] = 255.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

n, impl = int(sys.argv[1]), sys.argv[2]
img = np.full((n, n, 3), 100, np.uint8)
lab = np.zeros((n, n), np.int32)
lab[: n // 2] = 1
lab[:, n // 3:] += 2
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
out = dio.overlay(img, lab) if impl == "blocks" else whole_image(img, lab)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"inputs_mib": (img.nbytes + lab.nbytes) / 2**20, "before_mib": before / 1024,
                  "extra_mib": (peak - before) / 1024, "seconds": dt,
                  "digest": hashlib.sha1(out.tobytes()).hexdigest()}))
"""


def run(side: int, impl: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, str(side), impl, str(REPO)], capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(p.stdout)


IMAGE_CHILD = r"""
import resource, sys, time
import numpy as np
from PIL import Image
sys.path.insert(0, sys.argv[3])
n, folder = int(sys.argv[1]), sys.argv[2]
a = np.zeros((n, n, 3), np.uint8)
a[: n // 2] = (200, 40, 40)
a[:, n // 3:, 2] = 180
Image.fromarray(a).save(folder + "/big.png", compress_level=1)
"""

IMAGE_RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from diffseg_core.config import SegmenterConfig
from diffseg_core.segmenter import DiffSegSegmenter
from diffseg.cli import main
DiffSegSegmenter(SegmenterConfig(model="tiny-random", size=64)).model  # loaded (and cached) first
model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t = time.perf_counter()
rc = main(["image", sys.argv[1], "-o", sys.argv[2], "--model", "tiny-random", "--size", "64", "-q"])
print(json.dumps({"rc": rc, "model_mib": model, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t}))
"""


def image_job(side: int) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-c", IMAGE_CHILD, str(side), d, str(REPO)], check=True)
        p = subprocess.run([sys.executable, "-c", IMAGE_RUN, d + "/big.png", d + "/out", str(REPO)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return f"diffseg image {side}x{side}: failed: {(p.stderr.strip().splitlines() or ['killed'])[-1]}"
        r = json.loads(p.stdout.strip().splitlines()[-1])
    img, lab = side * side * 3 / 2**20, side * side * 4 / 2**20
    return (f"diffseg image {side}x{side} (image {img:.0f} MiB, int32 labels {lab:.0f} MiB): peak RSS "
            f"{r['peak_mib']:.0f} MiB in all, {r['peak_mib'] - r['model_mib']:.0f} MiB above the loaded model "
            f"({r['model_mib']:.0f} MiB), {r['seconds']:.1f} s, exit {r['rc']}")


TIFF_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])
from volume.io import read_volume

def status(key):  # kB -> MiB; VmHWM is this process's own peak (ru_maxrss keeps the parent's across exec)
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024

hwm0, anon0 = status("VmHWM"), status("RssAnon")
anon = anon0
t = time.perf_counter()
vol = read_volume(sys.argv[1])
for i in range(vol.shape[0]):
    vol.slice_values(0, i)
    anon = max(anon, status("RssAnon"))
print(json.dumps({"rss_mib": status("VmHWM") - hwm0, "anon_mib": anon - anon0,
                  "seconds": time.perf_counter() - t, "lazy": type(vol.data).__name__}))
"""


def tiff_stack_job(depth: int) -> str:
    import tempfile

    import numpy as np
    import tifffile

    out = []
    with tempfile.TemporaryDirectory() as d:
        stack = np.zeros((depth, 1024, 1024), np.uint16)
        for z in range(depth):  # a gradient per slice (compresses, as real stacks do)
            stack[z] = (np.arange(1024, dtype=np.uint16)[None, :] + z) % 4096
        size = stack.nbytes / 2**20
        files = []
        for name, kw in (("uncompressed", {"imagej": True}), ("zlib", {"compression": "zlib"})):
            tifffile.imwrite(f"{d}/{name}.tif", stack, **kw)
            files.append((name, f"{d}/{name}.tif"))
        del stack  # the children's own peaks only
        for name, path in files:
            p = subprocess.run([sys.executable, "-c", TIFF_CHILD, path, str(REPO)], capture_output=True, text=True)
            r = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else {"error": p.stderr[-200:]}
            out.append(f"{name}: peak RSS +{r.get('rss_mib', 0):.0f} MiB, of which process memory (not file "
                       f"pages) +{r.get('anon_mib', 0):.0f} MiB, {r.get('seconds', 0):.1f} s ({r.get('lazy', r.get('error'))})")
    return f"TIFF stack {depth}x1024x1024 uint16 ({size:.0f} MiB), read + every slice: " + "; ".join(out)


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, action="append", help="image side in pixels (repeatable) [8000]")
    ap.add_argument("--skip-reference", action="store_true", help="only the row-block overlay (huge sides)")
    ap.add_argument("--image", type=int, action="append", metavar="SIDE",
                    help="`diffseg image` end to end on a SIDE x SIDE PNG (repeatable)")
    ap.add_argument("--tiff-stack", type=int, action="append", metavar="DEPTH",
                    help="reading a DEPTH x 1024 x 1024 TIFF stack, uncompressed and zlib (repeatable)")
    a = ap.parse_args(argv)
    for side in a.image or []:
        print(image_job(side), flush=True)
    for depth in a.tiff_stack or []:
        print(tiff_stack_job(depth), flush=True)
    if (a.image or a.tiff_stack) and not a.side:
        return 0
    for side in a.side or [8000]:
        blocks = run(side, "blocks")
        line = f"overlay {side}x{side}: inputs {blocks.get('inputs_mib', 0):.0f} MiB; row blocks +{blocks.get('extra_mib', 0):.0f} MiB peak RSS, {blocks.get('seconds', 0):.1f} s"
        if not a.skip_reference:
            ref = run(side, "whole")
            if "error" in ref:
                line += f"; whole image: {ref['error']}"
            else:
                same = "same output" if ref["digest"] == blocks.get("digest") else "OUTPUTS DIFFER"
                line += f"; whole image +{ref['extra_mib']:.0f} MiB, {ref['seconds']:.1f} s ({same})"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
