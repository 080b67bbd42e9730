"""Every Python code block of README.md and docs/*.md runs as written.

Each block runs in a fresh folder that holds the inputs the docs name (``photo.jpg``,
``scan.nii.gz``, ``slices.tif``, ``image.tif``, ``videos/``, ``scans/``), on the CPU. The
docs name real models (Stable Diffusion from the hub); no weights can be downloaded here,
so the loader hands every model the tiny random one: the blocks' code paths run, their
segments mean nothing. A block may end with ``raise SystemExit(code)``: code 0 passes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from .conftest import REPO, write_frames

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list:
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text[: m.start()].count("\n") + 2
            out.append(pytest.param(doc, line, m.group(1), id=f"{doc.name}:{line}"))
    return out


def _inputs(folder: Path) -> None:
    import nibabel as nib
    import tifffile
    from PIL import Image

    from tests.volume.helpers import shuffle_slices, spheres

    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :40] = (200, 40, 40)
    rgb[20:50, 50:] = (40, 60, 200)
    Image.fromarray(rgb).save(folder / "photo.jpg")
    vol = (spheres((6, 32, 32)) * 60 + 20).astype(np.int16)
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([1.0, 1.0, 2.0, 1.0])), folder / "scan.nii.gz")
    gt = spheres((8, 32, 36))
    tifffile.imwrite(folder / "slices.tif", shuffle_slices(gt, seed=1, keep_zero=True).astype(np.uint16))
    tifffile.imwrite(folder / "image.tif", (gt * 50).astype(np.uint8))
    write_frames(folder / "videos" / "clip", 4)
    (folder / "scans").mkdir()
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([1.0, 1.0, 2.0, 1.0])), folder / "scans" / "ct.nii.gz")


def test_the_docs_have_python_blocks():
    assert len(blocks()) >= 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("doc,line,code", blocks())
def test_python_block_runs_as_written(doc, line, code, tmp_path, monkeypatch):
    import diffseg_core.segmenter as segmenter_module
    from diffseg_core.models import tiny_random_model

    _inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(segmenter_module, "load_model",
                        lambda model, device="auto", dtype="auto", **kw: tiny_random_model("cpu"))
    try:
        exec(compile(code, f"{doc.name}:{line}", "exec"), {"__name__": "__doc_block__"})
    except SystemExit as exc:
        assert exc.code in (0, None), f"{doc.name}:{line} exited with {exc.code}"
