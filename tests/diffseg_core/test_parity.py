"""Parity with the original DiffSeg (google/diffseg, TensorFlow) on the shared reference cases.

The attention tensors are regenerated with the shared generator (deterministic, bit-identical
float32), so nothing from ../shared is copied into the repository. Skips cleanly without it.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.pipeline import segment_from_attention
from tests.diffseg_core.attention_fixtures import adjusted_rand_index


def _reference_dir() -> "Path | None":
    env = os.environ.get("DIFFSEG_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"
    ref = root / "reference"
    return ref if (ref / "cases.json").exists() and (ref / "gen_attention.py").exists() else None


REF = _reference_dir()
pytestmark = pytest.mark.skipif(REF is None, reason="../shared/reference not available")
CASES = json.loads((REF / "cases.json").read_text())["cases"] if REF else {}


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("gen_attention", REF / "gen_attention.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def case_files(generator, tmp_path_factory):
    """Generate every distinct case once per test session (about 6 s each)."""
    out, made = tmp_path_factory.mktemp("diffseg_ref"), {}

    def get(name: str) -> Path:
        args = CASES[name]["generator_args"]
        key = json.dumps(args, sort_keys=True)
        if key not in made:
            path = out / f"{name}.npz"
            generator.save(path, generator.generate(**args))
            made[key] = path
        return made[key]

    return get


@pytest.mark.parametrize("refine", [False, True], ids=["norefine", "refine"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_original_labels(name, refine, generator, case_files):
    case = CASES[name]
    data = generator.load_case(case_files(name), case["frame"])
    expected = np.load(REF / f"{name}.labels.npz")["labels_refine" if refine else "labels_norefine"]
    seg = segment_from_attention([data[f"weight_{r}"] for r in (64, 32, 16, 8)],
                                 kl_threshold=[1.1] * 3, grid=16, refine=refine, out_size=(512, 512))
    assert seg.labels.shape == (512, 512) and seg.labels.dtype == np.int32
    assert seg.num_segments == case["n_labels"]["refine" if refine else "norefine"]
    ari = adjusted_rand_index(seg.labels, expected)
    assert ari >= 0.9998, f"{name}: ARI {ari:.5f} against the original"
