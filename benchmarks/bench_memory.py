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

``--ome-zarr D``: `diffseg volume` (`segment_volume`; per slice a classical threshold +
connected-blob segmenter, or ``--segmenter tiny-random``: DiffSeg with the random test model
at ``--size 128``, meaningless segments) on a synthetic D x S x S uint16 OME-Zarr stack of
bright spheres in noise (S = ``--zarr-side``, 2048 by default) written to ``--workdir``,
output an OME-Zarr label image: wall time, peak RSS (VmHWM, file pages of the memory maps
included) and the peak of the process's own memory (RssAnon, sampled every 0.1 s) beside
the sizes of the stack and of its int32 labels; with ``--in-ram`` the same run with the
labels held in RAM (the baseline: `volume.io.IN_MEMORY_LIMIT` raised); with
``--memory-limit MIB`` each run in a Linux memory cgroup of that much RAM (needs the right to
make one, e.g. root in a container), so the volume and its labels are bigger than the RAM the
run has. Issue 16 target: a volume larger than RAM is segmented with bounded memory.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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


ZARR_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[4])
import volume.io as vio
from diffseg_core.config import SegmenterConfig
from volume.api import segment_volume

def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) / 1024

class Threshold:  # a classical per-slice segmenter: bright blobs, one segment per connected blob
    def segment(self, images):
        import cv2
        from temporal.proposals import segmentation_from_labels
        out = []
        for rgb in images:
            g = rgb[..., 0]
            n, lab = cv2.connectedComponents((g > g.mean() + 2 * g.std()).astype("uint8"), connectivity=4)
            out.append(segmentation_from_labels(lab, background=0))
        return out

if sys.argv[3] == "ram":
    vio.IN_MEMORY_LIMIT = 1 << 62
seg = SegmenterConfig(model="tiny-random", size=128, device="cpu") if sys.argv[5] == "tiny-random" else Threshold()
peak = [status("RssAnon")]
stop = threading.Event()
def sample():
    while not stop.wait(0.1):
        peak[0] = max(peak[0], status("RssAnon"))
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
r = segment_volume(sys.argv[1], sys.argv[2], seg)
stop.set()
print(json.dumps({"seconds": time.perf_counter() - t, "hwm_mib": status("VmHWM"), "anon_mib": peak[0],
                  "n_labels": r.n_labels, "labels": str(r.labels_path)}))
"""


def write_sphere_stack(path: Path, depth: int, side: int, seed: int = 0) -> None:
    """A depth x side x side uint16 OME-Zarr (NGFF 0.4) of bright spheres (nuclei) in noise,
    written slab by slab (never whole in memory)."""
    import numpy as np
    import zarr

    rng = np.random.default_rng(seed)
    n = max(8, depth * side * side // 3_000_000)
    c = np.stack([rng.uniform(0, depth, n), rng.uniform(0, side, n), rng.uniform(0, side, n)], 1)
    r = rng.uniform(15, 60, n)
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = g.create_array("0", shape=(depth, side, side), dtype="uint16", chunks=(1, 512, 512),
                         chunk_key_encoding={"name": "v2", "separator": "/"})
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [2.0, 0.5, 0.5]}]}]}]
    for z0 in range(0, depth, 8):
        slab = rng.normal(300, 40, (min(8, depth - z0), side, side)).astype(np.float32)
        zz = np.arange(z0, z0 + slab.shape[0])[:, None, None]
        for (cz, cy, cx), rad in zip(c, r):
            rz = rad / 4  # 2 um slices, 0.5 um pixels
            if cz + rz < z0 or cz - rz >= z0 + slab.shape[0]:
                continue
            y0, y1 = int(max(cy - rad, 0)), int(min(cy + rad + 1, side))
            x0, x1 = int(max(cx - rad, 0)), int(min(cx + rad + 1, side))
            yy, xx = np.ogrid[y0:y1, x0:x1]
            inside = ((zz - cz) / rz) ** 2 + ((yy - cy) / rad) ** 2 + ((xx - cx) / rad) ** 2 <= 1
            slab[:, y0:y1, x0:x1] += 1500 * inside
        arr[z0:z0 + slab.shape[0]] = np.clip(slab, 0, 65535).astype(np.uint16)


def memory_cgroup(limit_mib: int) -> "Path | None":
    """A fresh Linux memory cgroup (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``)
    limited to ``limit_mib`` (RAM only, no swap), or None where none can be made."""
    for root, limit_file in ((Path("/sys/fs/cgroup"), "memory.max"), (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes")):
        if not (root / "cgroup.procs").exists() or (limit_file == "memory.max" and not (root / "cgroup.controllers").exists()):
            continue
        g = root / f"diffseg-bench-{os.getpid()}"
        try:
            g.mkdir(exist_ok=True)
            (g / limit_file).write_text(str(limit_mib << 20))
            if (g / "memory.memsw.limit_in_bytes").exists():
                (g / "memory.memsw.limit_in_bytes").write_text(str(limit_mib << 20))
            return g
        except OSError:
            continue
    return None


def ome_zarr_job(depth: int, side: int, workdir: "str | None", in_ram: bool, segmenter: str,
                 limit_mib: "int | None" = None) -> str:
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(dir=workdir))
    try:
        t = time.perf_counter()
        write_sphere_stack(d / "stack.ome.zarr", depth, side)
        made = time.perf_counter() - t
        lines = [f"OME-Zarr {depth}x{side}x{side} uint16 ({depth * side * side * 2 / 2**30:.2f} GiB; int32 labels "
                 f"{depth * side * side * 4 / 2**30:.2f} GiB), written in {made:.0f} s; diffseg volume with {segmenter}:"]
        group = memory_cgroup(limit_mib) if limit_mib else None
        if limit_mib:
            lines.append(f"  (each run in a memory cgroup of {limit_mib} MiB: RAM smaller than the labels)" if group else
                         "  (no memory cgroup could be made here: runs without a limit)")
        enter = (lambda: (group / "cgroup.procs").write_text(str(os.getpid()))) if group else None
        for mode in (("disk", "ram") if in_ram else ("disk",)):
            p = subprocess.run([sys.executable, "-c", ZARR_CHILD, str(d / "stack.ome.zarr"), str(d / f"out-{mode}"), mode,
                                str(REPO), segmenter], capture_output=True, text=True, preexec_fn=enter)
            if p.returncode != 0:
                why = "killed (out of memory)" if p.returncode in (-9, 137) else (p.stderr.strip().splitlines() or ["?"])[-1]
                lines.append(f"  labels {'in a scratch memory map' if mode == 'disk' else 'in RAM'}: failed: {why}")
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            out = sum(f.stat().st_size for f in Path(r["labels"]).rglob("*") if f.is_file())
            lines.append(f"  labels {'in a scratch memory map (default)' if mode == 'disk' else 'in RAM (baseline)'}: "
                         f"{r['seconds']:.0f} s ({r['seconds'] / depth:.2f} s/slice), peak RSS {r['hwm_mib']:.0f} MiB, "
                         f"process memory (RssAnon peak) {r['anon_mib']:.0f} MiB, {r['n_labels']} labels, "
                         f"output {out / 2**20:.0f} MiB on disk")
        return "\n".join(lines)
    finally:
        shutil.rmtree(d, ignore_errors=True)
        if limit_mib and group is not None:
            try:
                group.rmdir()
            except OSError:
                pass


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, action="append", help="image side in pixels (repeatable) [8000]")
    ap.add_argument("--skip-reference", action="store_true", help="only the row-block overlay (huge sides)")
    ap.add_argument("--image", type=int, action="append", metavar="SIDE",
                    help="`diffseg image` end to end on a SIDE x SIDE PNG (repeatable)")
    ap.add_argument("--tiff-stack", type=int, action="append", metavar="DEPTH",
                    help="reading a DEPTH x 1024 x 1024 TIFF stack, uncompressed and zlib (repeatable)")
    ap.add_argument("--ome-zarr", type=int, action="append", metavar="DEPTH",
                    help="`diffseg volume` on a DEPTH x S x S OME-Zarr stack (repeatable)")
    ap.add_argument("--zarr-side", type=int, default=2048, help="S of --ome-zarr [2048]")
    ap.add_argument("--in-ram", action="store_true", help="--ome-zarr also with the labels in RAM (baseline)")
    ap.add_argument("--segmenter", choices=("threshold", "tiny-random"), default="threshold",
                    help="--ome-zarr's per-slice segmenter: a classical threshold + connected blobs (many labels) "
                         "or DiffSeg with the tiny-random model at --size 128 [threshold]")
    ap.add_argument("--memory-limit", type=int, metavar="MIB",
                    help="run each --ome-zarr job in a Linux memory cgroup of MIB (RAM smaller than the volume)")
    ap.add_argument("--workdir", help="where --ome-zarr writes its stack and outputs [the temp folder]")
    a = ap.parse_args(argv)
    for depth in a.ome_zarr or []:
        print(ome_zarr_job(depth, a.zarr_side, a.workdir, a.in_ram, a.segmenter, a.memory_limit), flush=True)
    for side in a.image or []:
        print(image_job(side), flush=True)
    for depth in a.tiff_stack or []:
        print(tiff_stack_job(depth), flush=True)
    if (a.image or a.tiff_stack or a.ome_zarr) and not a.side:
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
