#!/usr/bin/env python3
"""Parity of `segment_from_attention` with the original DiffSeg on the shared reference cases.

Regenerates each case with the reference generator, segments it with the float16-faithful
merge (default) and with the pure float32 merge, with and without K-means refinement, and
prints per case: segments found vs the original's, pixels whose label differs from the
original's stored labels (same ids, no relabelling), the adjusted Rand index, and the time.

    python benchmarks/bench_parity.py ../shared/reference
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diffseg_core.pipeline import segment_from_attention  # noqa: E402
from tests.diffseg_core.attention_fixtures import adjusted_rand_index  # noqa: E402


def main(argv: "list[str] | None" = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reference", type=Path, help="folder with cases.json, gen_attention.py, *.labels.npz")
    a = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("gen_attention", a.reference / "gen_attention.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    cases = json.loads((a.reference / "cases.json").read_text())["cases"]
    made: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':6s} {'merge':9s} {'refine':6s} {'K':>5s} {'px differ':>10s} {'ARI':>8s} {'s':>6s}")
        for name in sorted(cases):
            args = cases[name]["generator_args"]
            key = json.dumps(args, sort_keys=True)
            if key not in made:
                made[key] = Path(tmp) / f"{name}.npz"
                gen.save(made[key], gen.generate(**args))
            data = gen.load_case(made[key], cases[name]["frame"])
            maps = [data[f"weight_{r}"] for r in (64, 32, 16, 8)]
            ref = np.load(a.reference / f"{name}.labels.npz")
            for faithful in (True, False):
                for refine in (False, True):
                    t0 = time.perf_counter()
                    seg = segment_from_attention(maps, refine=refine, out_size=(512, 512), faithful_fp16=faithful)
                    dt = time.perf_counter() - t0
                    key_r = "refine" if refine else "norefine"
                    expected = ref[f"labels_{key_r}"]
                    k_ref = cases[name]["n_labels"][key_r]
                    print(f"{name:6s} {'fp16' if faithful else 'float32':9s} {str(refine):6s} "
                          f"{seg.num_segments:>2d}/{k_ref:<2d} {int((seg.labels != expected).sum()):>10d} "
                          f"{adjusted_rand_index(seg.labels, expected):8.5f} {dt:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
