"""DICOM-SEG in: a DICOM Segmentation reads back as the label volume it holds, in its source
series' array order; one that leaves out its empty slices is placed on its series; `diffseg
evaluate volume` and `diffseg join` take DICOM-SEGs (ours and other tools')."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffseg_core.errors import InputError
from tests.volume.helpers import write_dicom_series
from volume.api import read_labels
from volume.dicom import read_dicom_seg, write_dicom_seg
from volume.io import read_label_volume, read_volume

hd = pytest.importorskip("highdicom")

SHAPE = (6, 24, 28)


def labels_in_every_slice() -> np.ndarray:
    lab = np.zeros(SHAPE, np.int32)
    lab[:, 2:10, 3:20] = 1
    lab[2:6, 12:20, 5:9] = 2
    lab[0, 20:, 20:] = 3  # slice 0 holds a label the others do not: the slice order shows
    return lab


def series(tmp_path, name="ct", **geometry):
    write_dicom_series(tmp_path / name, np.full(SHAPE, 1034, np.uint16), **geometry)
    return read_volume(tmp_path / name)


@pytest.mark.parametrize("geometry", [{}, {"row_dir": (0.0, 1.0, 0.0), "col_dir": (1.0, 0.0, 0.0)}],
                         ids=["axial", "slices-descending-in-z"])
def test_a_dicom_seg_reads_back_as_the_labels_written(tmp_path, geometry):
    img = series(tmp_path, **geometry)
    lab = labels_in_every_slice()
    write_dicom_seg(tmp_path / "l.dcm", lab, img, names={1: "liver", 2: None, 3: "x"})
    got, vol = read_label_volume(tmp_path / "l.dcm")
    np.testing.assert_array_equal(got, lab)  # the series' array order, not highdicom's stacking
    np.testing.assert_allclose(vol.affine, img.affine, atol=1e-6)
    assert vol.spacing == pytest.approx(img.spacing) and vol.source_format == "dicom-seg"
    assert vol.meta["segment_labels"] == {1: "liver", 2: "label 2", 3: "x"}


def test_empty_slices_left_out_are_placed_on_the_series(tmp_path):
    img = series(tmp_path)
    lab = labels_in_every_slice()
    lab[0] = lab[-1] = 0  # most tools (and ours) leave out frames with no segment
    write_dicom_seg(tmp_path / "l.dcm", lab, img)
    with pytest.raises(InputError, match=r"leaves out 2 of the 6 slices.*--series"):
        read_label_volume(tmp_path / "l.dcm")
    got, vol = read_labels(tmp_path / "l.dcm", on=img)
    np.testing.assert_array_equal(got, lab)
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "l.dcm", like=img).data, lab)
    other = series(tmp_path, "other")
    with pytest.raises(InputError, match="not a segmentation of the series"):
        read_labels(tmp_path / "l.dcm", on=other)
    with pytest.raises(InputError, match="placed on a DICOM series"):
        read_labels(tmp_path / "l.dcm", on=read_volume(_npy(tmp_path)))


def _npy(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(SHAPE, np.float32))
    return tmp_path / "v.npy"


def _other_tools_seg(tmp_path, img, pixels, kind="BINARY"):
    """A DICOM-SEG as another tool writes it (highdicom defaults: empty frames left out)."""
    import pydicom
    from pydicom.sr.codedict import codes

    from volume.dicom import _SOURCE_TYPE2

    srcs = [pydicom.dcmread(f, stop_before_pixels=True) for f in img.meta["dicom_files"]]
    for ds in srcs:
        for name in _SOURCE_TYPE2:
            if name not in ds:
                setattr(ds, name, "")
        ds.FrameOfReferenceUID = ds.get("FrameOfReferenceUID") or "1.2.3.4"
    n = pixels.shape[-1] if pixels.ndim == 4 else int(pixels.max())
    pixels = pixels.astype(np.uint8) if pixels.dtype.kind == "i" else pixels
    segs = [hd.seg.SegmentDescription(segment_number=i, segment_label=f"s{i}",
                                      segmented_property_category=codes.SCT.Tissue,
                                      segmented_property_type=codes.SCT.Tissue,
                                      algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
            for i in range(1, n + 1)]
    seg = hd.seg.Segmentation(source_images=srcs, pixel_array=pixels, segmentation_type=kind,
                              segment_descriptions=segs, series_instance_uid=hd.UID(), series_number=1,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="x",
                              manufacturer_model_name="x", software_versions="1", device_serial_number="1")
    seg.save_as(str(tmp_path / "other_tool.dcm"))
    return tmp_path / "other_tool.dcm"


def test_what_is_not_a_label_volume_is_refused(tmp_path):
    img = series(tmp_path)
    both = np.zeros(SHAPE + (2,), bool)
    both[1:3, 2:10, 3:20, 0] = True
    both[2:4, 5:12, 5:9, 1] = True  # the segments share voxels
    with pytest.raises(InputError, match="one segment per voxel"):
        read_labels(_other_tools_seg(tmp_path, img, both), on=img)
    with pytest.raises(InputError, match="FRACTIONAL"):
        read_labels(_other_tools_seg(tmp_path, img, both.astype(np.float32) * 0.5, "FRACTIONAL"), on=img)
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 40)
    with pytest.raises(InputError):
        read_label_volume(tmp_path / "broken.dcm")


def test_evaluate_volume_takes_dicom_segs(tmp_path, capsys):
    """Our run's DICOM-SEG against another tool's ground truth, placed on the series the
    run segmented without being told; --series names another series: refused."""
    from diffseg.cli import main
    from tests.test_names_outputs import GreyNamer
    from volume.api import segment_volume
    from volume.evaluate import volume_dice
    from volume.types import VolumeConfig

    write_dicom_series(tmp_path / "ct", np.where(labels_in_every_slice() > 0, 1324, 1034).astype(np.uint16))
    cfg = VolumeConfig(background=None, min_size=0, min_label_size=0, clear_outside=False, window="minmax")
    run = segment_volume(tmp_path / "ct", tmp_path / "out" / "labels.dcm", segmenter=GreyNamer(("organ", "air"), classes=(0, 3)),
                         config=cfg)
    img = read_volume(tmp_path / "ct")
    truth = labels_in_every_slice()
    truth[-1] = 0  # an empty last slice: left out of the file
    gt = _other_tools_seg(tmp_path, img, truth)
    pred = read_dicom_seg(run.labels_path, like=img).data
    assert main(["evaluate", "volume", str(tmp_path / "out"), str(gt), "--no-surface"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = volume_dice(pred, truth, surface=False)
    assert doc["mean_dice"] == pytest.approx(expected.mean_dice) and doc["n_gt"] == 3
    series(tmp_path, "other")
    assert main(["evaluate", "volume", str(tmp_path / "out"), str(gt), "--series", str(tmp_path / "other")]) == 2
    assert "not a segmentation of the series" in capsys.readouterr().err


def test_join_of_a_dicom_seg_run_writes_a_dicom_seg(tmp_path):
    """The joined labels of a DICOM run written as DICOM-SEG: segment numbers renumbered
    1..n (recorded), the same voxels as the join of the same run in NIfTI."""
    from tests.volume.test_join_volume import pieces_volume
    from volume.api import join_volume
    from volume.report import write_labels_json

    lab, img8, ball, other = pieces_volume()
    lab[0] = lab[-1] = 0  # empty end slices: left out of the DICOM-SEGs
    ball[0] = ball[-1] = False
    write_dicom_series(tmp_path / "ct", img8.astype(np.uint16) + 1024)
    img = read_volume(tmp_path / "ct")
    runs = {}
    for name in ("labels.dcm", "labels.nii.gz"):
        run = tmp_path / name.split(".")[1]
        run.mkdir()
        from volume.io import write_labels

        write_labels(run / name, lab, img)
        write_labels_json(run / "labels.json", lab, img, 0, {"image": str(tmp_path / "ct")})
        runs[name] = join_volume(run, tmp_path / f"joined_{name.split('.')[1]}")
    dcm, nii = runs["labels.dcm"], runs["labels.nii.gz"]
    assert dcm.labels_path.name == "labels.dcm"
    got, _ = read_labels(dcm.labels_path)  # on the series its labels.json names
    ref, _ = read_label_volume(nii.labels_path)
    assert set(np.unique(np.asarray(ref)[ball]).tolist()) == {1}  # joined: the smallest id kept, 2 gone
    assert sorted(np.unique(got).tolist()) == [0, 1, 2]  # DICOM-SEG: 1..n
    lut = {int(k): v for k, v in json.loads(dcm.json_path.read_text())["renumbered"].items()}
    assert lut == {1: 1, 2: 3}
    np.testing.assert_array_equal(np.vectorize(lambda v: lut.get(v, 0))(got), np.asarray(ref))
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "diffseg", "join", str(tmp_path / "dcm"), "-o", str(tmp_path / "cli_joined")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    # the summary line; not highdicom's line per module it copies into the DICOM-SEG
    assert done.returncode == 0 and "copy" not in done.stderr + done.stdout, done.stderr
    assert (tmp_path / "cli_joined" / "labels.dcm").is_file()


def test_napari_opens_a_dicom_seg_run_as_labels(tmp_path):
    pytest.importorskip("npe2")
    from diffseg.napari_plugin import get_reader
    from volume.report import write_labels_json

    img = series(tmp_path)
    lab = labels_in_every_slice()
    lab[-1] = 0  # left out of the file: placed on the run's series
    (tmp_path / "run").mkdir()
    write_dicom_seg(tmp_path / "run" / "labels.dcm", lab, img)
    write_labels_json(tmp_path / "run" / "labels.json", lab, img, 0, {"image": str(tmp_path / "ct")})
    [(got, meta, kind)] = get_reader(str(tmp_path / "run" / "labels.dcm"))(str(tmp_path / "run" / "labels.dcm"))
    assert kind == "labels" and meta["features"]["id"] == [1, 2, 3]
    np.testing.assert_array_equal(got, lab)


def test_a_dicom_seg_beside_its_series_is_not_taken_for_an_image(tmp_path):
    """A study folder as a PACS exports it: the series and a segmentation of it. The folder
    reads as the one image series (the DICOM-SEG is not a second series to choose from), and
    the DICOM-SEG as labels on it."""
    img = series(tmp_path)
    lab = labels_in_every_slice()
    write_dicom_seg(tmp_path / "ct" / "seg.dcm", lab, img)
    again = read_volume(tmp_path / "ct")
    assert again.shape == SHAPE and again.source_format == "dicom" and len(again.meta["dicom_files"]) == 6
    np.testing.assert_array_equal(read_labels(tmp_path / "ct" / "seg.dcm", on=again)[0], lab)


def test_stack_links_a_dicom_seg_placed_on_its_image_series(tmp_path):
    """Another tool's per-slice labels as a DICOM-SEG: with its series as --image it is
    placed on it and written back as a DICOM-SEG of that series; read alone (frames on
    every slice) it is written as NIfTI, having no series to reference; one that leaves out
    empty slices is refused alone, naming --image."""
    from diffseg.cli import main

    img = series(tmp_path)
    per_slice = labels_in_every_slice() * 10 + np.arange(SHAPE[0])[:, None, None]  # its own ids on every slice
    per_slice[labels_in_every_slice() == 0] = 0
    per_slice[0] = per_slice[-1] = 0  # empty end slices: left out of the file
    write_dicom_seg(tmp_path / "part.dcm", np.unique(per_slice, return_inverse=True)[1].reshape(SHAPE), img)
    assert main(["stack", str(tmp_path / "part.dcm"), "-o", str(tmp_path / "alone")]) == 2
    assert main(["stack", str(tmp_path / "part.dcm"), "--image", str(tmp_path / "ct"), "-o", str(tmp_path / "on")]) == 0
    linked, vol = read_labels(tmp_path / "on", on=img)
    assert vol.source_format == "dicom-seg" and (tmp_path / "on" / "labels.dcm").is_file()
    expected = labels_in_every_slice()
    expected[0] = expected[-1] = 0
    # one 3D label per structure: the slices' own ids linked through the volume
    pairs = {(int(a), int(b)) for a, b in zip(expected.ravel(), linked.ravel())}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 3

    full = labels_in_every_slice() * 10 + np.arange(SHAPE[0])[:, None, None]
    full[labels_in_every_slice() == 0] = 0
    write_dicom_seg(tmp_path / "full.dcm", np.unique(full, return_inverse=True)[1].reshape(SHAPE), img)
    assert main(["stack", str(tmp_path / "full.dcm"), "-o", str(tmp_path / "full")]) == 0
    got, gv = read_labels(tmp_path / "full")
    assert gv.source_format == "nifti" and (tmp_path / "full" / "labels.nii.gz").is_file()
    np.testing.assert_allclose(gv.affine, img.affine, atol=1e-4)
    pairs = {(int(a), int(b)) for a, b in zip(labels_in_every_slice().ravel(), got.ravel())}
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}) == 4
