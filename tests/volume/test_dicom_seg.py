"""DICOM in, DICOM-SEG out (highdicom): read back with highdicom, it references the source
series and holds the labels, names and colours `diffseg volume` gives."""
from __future__ import annotations

import json

import numpy as np
import pytest

from volume.api import segment_volume
from volume.types import VolumeConfig
from tests.test_names_outputs import GreyNamer
from tests.volume.helpers import write_dicom_series

hd = pytest.importorskip("highdicom")


@pytest.fixture
def series(tmp_path):
    vol = np.full((6, 24, 28), 1024 + 10, np.uint16)  # stored values; HU = stored - 1024
    vol[:, 6:18, 8:20] = 1024 + 300
    uid = write_dicom_series(tmp_path / "ct", vol)
    return tmp_path / "ct", uid


CFG = VolumeConfig(background=None, min_size=0, min_label_size=0, clear_outside=False, window="minmax")


def test_dicom_input_gives_a_dicom_seg_that_references_the_series(series, tmp_path):
    folder, uid = series
    res = segment_volume(folder, tmp_path / "out", segmenter=GreyNamer(("organ", "air"), classes=(0, 3)), config=CFG)
    assert res.labels_path.name == "labels.dcm" and res.json_path.name == "labels.json"
    nii = segment_volume(folder, tmp_path / "nii" / "labels.nii.gz",
                         segmenter=GreyNamer(("organ", "air"), classes=(0, 3)), config=CFG)
    import nibabel as nib

    from volume.io import read_volume

    expected = np.asarray(nib.load(nii.labels_path).dataobj).transpose(2, 1, 0)  # NIfTI (i, j, k) -> (slice, row, col)
    seg = hd.seg.segread(res.labels_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    doc = json.loads(res.json_path.read_text())
    assert seg.number_of_segments == doc["n_labels"] == len(np.unique(expected[expected > 0]))
    names = {r["id"]: r["name"] for r in doc["labels"]}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [names[i] or f"label {i}" for i in sorted(names)]
    vol = read_volume(folder)
    sops = [__import__("pydicom").dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in vol.meta["dicom_files"]]
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=sops, combine_segments=True)
    np.testing.assert_array_equal(got, expected)
    from diffseg_core.io import label_palette

    pal = label_palette(10)
    for s in seg.SegmentSequence:
        rgb = hd.color.CIELabColor.from_dicom_value(s.RecommendedDisplayCIELabValue).to_rgb()
        assert np.abs(np.array(rgb) - pal[s.SegmentNumber]).max() <= 1  # our overlay's colour


def test_dicom_seg_needs_a_dicom_input(tmp_path, capsys):
    from diffseg.cli import main

    np.save(tmp_path / "v.npy", np.ones((3, 16, 16), np.float32))
    assert main(["volume", str(tmp_path / "v.npy"), "-o", str(tmp_path / "x.dcm"), "--model", "tiny-random",
                 "-q"]) == 2
    assert not (tmp_path / "x.dcm").exists() and "needs a DICOM input series" in capsys.readouterr().err


def test_stack_of_dicom_labels_still_writes_nifti_by_default(series, tmp_path):
    from volume.api import resolve_output
    from volume.io import read_volume

    vol = read_volume(series[0])
    assert resolve_output(tmp_path / "o", vol).name == "labels.nii.gz"
    assert resolve_output(tmp_path / "o", vol, dicom_seg=True).name == "labels.dcm"


def test_run_writes_a_dicom_seg_for_a_dicom_series(series, tmp_path):
    from diffseg.distributed import RunConfig, run_job

    folder, uid = series
    cfg = RunConfig(segmenter_factory="tests.conftest:fake_segmenter", accelerator="cpu",
                    volume={"background": None, "clear_outside": False, "min_size": 0, "min_label_size": 0})
    s = run_job([folder], tmp_path / "job", cfg)
    assert s.done == 1
    seg = hd.seg.segread(tmp_path / "job" / "volumes" / "ct.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid and seg.number_of_segments >= 1
    assert (tmp_path / "job" / "volumes" / "ct.json").exists()
