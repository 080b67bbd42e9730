#!/usr/bin/env python3
"""Peak memory of the overlay on huge images: `diffseg_core.io.overlay` (row blocks) beside the
whole-image formula it replaced, each in its own process, on the same synthetic image.

    python benchmarks/bench_memory.py [--side 8000] [--side 16000]

Prints, per side: the inputs' size, and for each implementation the peak RSS above the
process's RSS before the call (ru_maxrss) and the wall time. The two outputs are compared
(they must be equal). Target (issue 17): a 16000x16000 image within 2 GB in all.
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


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, action="append", help="image side in pixels (repeatable) [8000]")
    ap.add_argument("--skip-reference", action="store_true", help="only the row-block overlay (huge sides)")
    a = ap.parse_args(argv)
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
