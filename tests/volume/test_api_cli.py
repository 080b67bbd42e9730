"""End to end: `segment_volume`, `stack_labels`, the CLI, intensities and geometry helpers."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from diffseg.cli import main
from diffseg_core.errors import InputError
from tests.volume.helpers import (ThresholdSegmenter, shared_data, shuffle_slices, spheres, stacked_ellipsoids,
                                  write_dicom_series)
from volume.api import segment_volume, stack_labels
from volume.evaluate import volume_dice
from volume.geometry import square_shape, through_plane_axis
from volume.intensity import plan_intensity, to_uint8
from volume.io import read_label_volume, read_volume
from volume.types import Volume, VolumeConfig


def _partition_equal(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], 1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


# ----------------------------------------------------------------------------- geometry / intensity
def test_through_plane_axis_and_ties() -> None:
    assert through_plane_axis((1.0, 1.0, 1.0)) == 0
    assert through_plane_axis((0.5, 3.0, 0.5)) == 1
    assert through_plane_axis((1.0, 2.0, 2.0)) == 1
    assert square_shape((10, 20), (1.0, 1.0)) == (10, 20)
    assert square_shape((10, 20), (2.0, 0.5)) == (40, 20)


def test_ct_window_auto_and_presets() -> None:
    hu = np.full((4, 8, 8), -1000, np.int16)
    hu[:, 2:6, 2:6] = 40
    vol = Volume(data=hu)
    imap = plan_intensity(vol, "auto")
    assert "soft-tissue" in imap.mode and (imap.low, imap.high) == (-160.0, 240.0)
    g, bad = to_uint8(vol.slice_values(0, 0), imap)
    assert bad == 0 and g[0, 0] == 0 and g[3, 3] == 128  # level 40 -> mid grey
    lung = plan_intensity(vol, "lung")
    assert (lung.low, lung.high) == (-1350.0, 150.0)
    explicit = plan_intensity(vol, (100.0, 50.0))
    assert (explicit.low, explicit.high) == (75.0, 125.0)


def test_percentile_for_microscopy_and_nan_count() -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(100, 1100, (6, 20, 20)).astype(np.uint16)  # no HU: percentile mode
    imap = plan_intensity(Volume(data=data), "auto")
    assert imap.mode.startswith("percentile")
    assert 100 <= imap.low < 130 and 1070 < imap.high <= 1100
    f = data[0].astype(np.float32)
    f[0, :3] = np.nan
    f[1, 0] = np.inf
    g, bad = to_uint8(f, imap)
    assert bad == 4 and g[0, 0] == 0


# ----------------------------------------------------------------------------- stack
def test_stack_labels_links_shuffled_phantom(tmp_path: Path) -> None:
    gt = spheres((14, 32, 36))
    np.save(tmp_path / "slices.npy", shuffle_slices(gt, seed=3))
    res = stack_labels(tmp_path / "slices.npy", tmp_path / "out" / "lab.npy",
                       VolumeConfig(background=None, min_size=4))
    pred = np.load(res.labels_path, allow_pickle=False)
    assert pred.dtype == np.int32 and pred.shape == gt.shape
    assert _partition_equal(pred, gt)
    assert res.n_labels == 5 and sorted(np.unique(pred).tolist()) == [1, 2, 3, 4, 5]
    doc = json.loads(res.json_path.read_text())
    assert doc["n_labels"] == 5 and doc["volume_unit"] == "voxels"
    assert sum(e["voxels"] for e in doc["labels"]) == gt.size
    # each label's colour: the overlays' colour, also in the 3D Slicer colour table beside it
    from diffseg_core.io import label_colors

    table = [ln.split() for ln in res.json_path.with_suffix(".ctbl").read_text().splitlines() if not ln.startswith("#")]
    assert [int(r[0]) for r in table] == [0, 1, 2, 3, 4, 5]
    for e in doc["labels"]:
        assert e["color"] == label_colors(np.array([[e["id"]]]))[0, 0].tolist()
        assert [int(v) for v in table[e["id"]][2:5]] == e["color"]
    assert res.montage_path.exists() and res.montage_path.stat().st_size > 0


def test_stack_nifti_keeps_geometry_and_anisotropy(tmp_path: Path) -> None:
    spacing = (3.0, 0.7, 0.7)  # (dz, dy, dx)
    gt = spheres((12, 40, 40), spacing=spacing)
    aff = np.array([[-0.7, 0, 0, 30.0], [0, 0, 3.0, -12.0], [0, -0.7, 0, 5.0], [0, 0, 0, 1]])  # LIP-like
    sl = shuffle_slices(gt, seed=4, keep_zero=True)
    img = nib.Nifti1Image(sl.transpose(2, 1, 0).astype(np.int16), aff)
    nib.save(img, tmp_path / "sl.nii.gz")
    res = stack_labels(tmp_path / "sl.nii.gz", tmp_path / "lab.nii.gz", VolumeConfig(min_size=4))
    out = nib.load(res.labels_path)
    assert np.allclose(out.affine, aff) and nib.aff2axcodes(out.affine) == nib.aff2axcodes(aff)
    pred = np.asarray(out.dataobj).transpose(2, 1, 0)
    # Through-plane axis: file axis k has the 3.0 spacing = our axis 0.
    assert res.axis == 0
    assert volume_dice(pred, gt, oracle=False).mean_dice == pytest.approx(1.0)
    doc = json.loads(res.json_path.read_text())
    assert doc["volume_unit"] == "mm3"
    e = doc["labels"][0]
    assert e["volume"] == pytest.approx(e["voxels"] * 3.0 * 0.7 * 0.7, rel=1e-5)


def test_stack_axes_all_and_tiff(tmp_path: Path) -> None:
    gt = spheres((16, 24, 28))
    # Slice-wise labels along z; fusing three axes of an already consistent volume keeps it.
    tifffile.imwrite(tmp_path / "sl.tif", gt.astype(np.uint16), imagej=True, metadata={"axes": "ZYX"})
    res = stack_labels(tmp_path / "sl.tif", tmp_path / "lab.tif",
                       VolumeConfig(axes="all", min_size=4, background=0))
    pred = read_label_volume(res.labels_path)[0]
    assert _partition_equal(np.asarray(pred), gt)


# ----------------------------------------------------------------------------- segment_volume
def _ct_phantom(spacing=(2.5, 0.8, 0.8)) -> tuple[np.ndarray, np.ndarray]:
    gt = spheres((10, 32, 32), spacing=spacing, touching=False)
    hu = np.full(gt.shape, -1000, np.int16)  # air
    hu[gt == 1] = 60      # soft tissue
    hu[gt == 3] = 600     # bone-like shell
    hu[gt == 4] = 30      # core
    return gt, hu


def test_segment_volume_nifti_fake_segmenter(tmp_path: Path) -> None:
    gt, hu = _ct_phantom()
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), aff), tmp_path / "ct.nii.gz")
    seg = ThresholdSegmenter(edges=(20, 120, 200), batch_size=3)
    res = segment_volume(tmp_path / "ct.nii.gz", tmp_path / "out", seg, VolumeConfig(min_size=4))
    assert res.labels_path == tmp_path / "out" / "labels.nii.gz"
    assert seg.calls == 4  # 10 slices in batches of 3
    pred = np.asarray(nib.load(res.labels_path).dataobj).transpose(2, 1, 0)
    # Soft-tissue window: air 0, soft tissue/core ~ mid grey (one band), shell white.
    expect = np.select([gt == 3, (gt == 1) | (gt == 4)], [2, 1], 0)
    assert _partition_equal(pred, expect)
    doc = json.loads(res.json_path.read_text())
    assert "soft-tissue" in doc["intensity"]
    # provenance: what made the labels, with which linking knobs
    assert doc["software"].startswith("diffseg-vv ") and doc["segmenter"]["class"] == "ThresholdSegmenter"
    assert doc["engine"]["associate"]["min_iou"] == VolumeConfig().engine.associate.min_iou
    assert doc["image"] == str(tmp_path / "ct.nii.gz")  # the scan: `diffseg join`'s grey test reads it


def test_segment_volume_resamples_anisotropic_slices(tmp_path: Path) -> None:
    data = np.zeros((4, 10, 30), np.float32)
    data[:, 2:8, 5:25] = 1000.0
    vol_path = tmp_path / "v.tif"
    tifffile.imwrite(vol_path, data, imagej=True, resolution=(1 / 0.5, 1 / 1.5), metadata={"spacing": 0.5, "axes": "ZYX"})
    seg = ThresholdSegmenter(edges=(128,))
    res = segment_volume(vol_path, tmp_path / "o.npy", seg, VolumeConfig(axis="z", window="minmax", min_size=1))
    assert seg.sizes[0] == (30, 30)  # rows 10 * 1.5 / 0.5 -> square 0.5 pixels
    pred = np.load(res.labels_path)
    assert pred.shape == data.shape
    assert _partition_equal(pred, (data > 0).astype(np.int32))


def test_segment_volume_nan_warning_and_axes_all(tmp_path: Path) -> None:
    gt, hu = _ct_phantom(spacing=(1.0, 1.0, 1.0))
    f = hu.astype(np.float32)
    f[0, 0, :5] = np.nan
    np.save(tmp_path / "v.npy", f)
    seg = ThresholdSegmenter(edges=(20, 120, 200))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = segment_volume(tmp_path / "v.npy", tmp_path / "o.npy", seg,
                             VolumeConfig(axes="all", window="soft-tissue", min_size=4))
    assert any("5 NaN/inf voxels replaced" in str(w.message) for w in rec)
    assert res.warnings and "NaN" in res.warnings[0]
    pred = np.load(res.labels_path)
    expect = np.select([gt == 3, (gt == 1) | (gt == 4)], [2, 1], 0)
    assert _partition_equal(pred, expect)


def test_dicom_input_writes_nifti_in_dicom_geometry(tmp_path: Path) -> None:
    gt, hu = _ct_phantom()
    stored = (hu.astype(np.int32) + 1024).astype(np.uint16)
    write_dicom_series(tmp_path / "dcm", stored, spacing=(2.5, 0.8, 0.8), intercept=-1024.0)
    seg = ThresholdSegmenter(edges=(20, 120, 200))
    res = segment_volume(tmp_path / "dcm", tmp_path / "out" / "labels.nii.gz", seg, VolumeConfig(min_size=4))
    img = nib.load(res.labels_path)
    vol = read_volume(tmp_path / "dcm")
    assert np.allclose(img.affine @ [3, 2, 1, 1], vol.affine @ [1, 2, 3, 1])
    pred = np.asarray(img.dataobj).transpose(2, 1, 0)
    expect = np.select([gt == 3, (gt == 1) | (gt == 4)], [2, 1], 0)
    assert _partition_equal(pred, expect)


def test_bad_output_extension_leaves_nothing(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InputError, match="output extension"):
        segment_volume(tmp_path / "v.npy", tmp_path / "o.png", ThresholdSegmenter())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]


def test_failure_midway_leaves_no_partial_files(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.zeros((6, 8, 8), np.float32))

    class Boom(ThresholdSegmenter):
        def segment(self, images):
            if self.calls >= 1:
                raise RuntimeError("device lost")
            return super().segment(images)

    with pytest.raises(RuntimeError):
        segment_volume(tmp_path / "v.npy", tmp_path / "out" / "o.npy", Boom(batch_size=2))
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- CLI
def test_cli_stack_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = spheres((10, 24, 24))
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "sl.npy", shuffle_slices(gt, seed=5, keep_zero=True))
    rc = main(["stack", str(tmp_path / "sl.npy"), "-o", str(tmp_path / "lab.npy"), "--background", "none",
               "--min-size", "4", "-q"])
    assert rc == 0
    capsys.readouterr()
    rc = main(["evaluate", "volume", str(tmp_path / "lab.npy"), str(tmp_path / "gt.npy")])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mean_dice"] == pytest.approx(1.0) and doc["mean_oracle_dice"] == pytest.approx(1.0)
    assert set(doc["dice"]) == {"1", "2", "3", "4"}
    # Raw slices score perfectly only per slice (the oracle), not in 3D.
    main(["evaluate", "volume", str(tmp_path / "sl.npy"), str(tmp_path / "gt.npy")])
    raw = json.loads(capsys.readouterr().out)
    assert raw["mean_oracle_dice"] == pytest.approx(1.0) and raw["mean_dice"] < 0.9
    # a run's output folder is read through its labels file (not taken for a DICOM folder)
    assert main(["stack", str(tmp_path / "sl.npy"), "-o", str(tmp_path / "run"), "--background", "none",
                 "--min-size", "4", "-q"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "volume", str(tmp_path / "run"), str(tmp_path / "gt.npy")]) == 0
    assert json.loads(capsys.readouterr().out)["dice"] == doc["dice"]


@pytest.mark.parametrize("argv,needle", [
    (["stack", "{d}/missing.nii.gz", "-o", "{d}/o.nii.gz"], "no such file"),
    (["stack", "{d}/four.npy", "-o", "{d}/o.npy"], "--index"),
    (["stack", "{d}/empty.nii.gz", "-o", "{d}/o.nii.gz"], "empty"),
    (["stack", "{d}/four.npy", "-o", "{d}/o.png", "--index", "0"], "output extension"),
    (["evaluate", "volume", "{d}/four.npy", "{d}/other.npy", "--index", "0"], "differs"),
    (["volume", "{d}/four.npy", "-o", "{d}/o.npy", "--window", "40"], "window"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, argv, needle) -> None:
    np.save(tmp_path / "four.npy", np.zeros((2, 3, 4, 5), np.int16))
    np.save(tmp_path / "other.npy", np.zeros((3, 4, 6), np.int16))
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    argv = [a.format(d=tmp_path) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse rejects bad option values itself (exit 2)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err and "Traceback" not in err


# ----------------------------------------------------------------------------- real data
def test_real_ct_labels_round_trip_through_stack(tmp_path: Path) -> None:
    data = shared_data()
    if data is None or not (data / "ct_totalseg_abdomen" / "labels.nii.gz").exists():
        pytest.skip("shared data not found (set DIFFSEG_SHARED)")
    src = data / "ct_totalseg_abdomen" / "labels.nii.gz"
    gt_img = nib.load(src)
    gt = np.asarray(gt_img.dataobj).transpose(2, 1, 0).astype(np.int32)
    sl = shuffle_slices(gt, seed=7, keep_zero=True)
    nib.save(nib.Nifti1Image(sl.transpose(2, 1, 0).astype(np.int16), gt_img.affine, gt_img.header),
             tmp_path / "sl.nii.gz")
    res = stack_labels(tmp_path / "sl.nii.gz", tmp_path / "lab.nii.gz", VolumeConfig(min_size=0, min_label_size=0))
    out = nib.load(res.labels_path)
    assert np.allclose(out.affine, gt_img.affine)
    pred = np.asarray(out.dataobj).transpose(2, 1, 0)
    s = volume_dice(pred, gt, oracle=False)
    assert s.n_gt == 41 and s.mean_dice > 0.97


def test_cli_volume_with_tiny_random_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # The real DiffSegSegmenter path end to end (random weights: segments are meaningless).
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (3, 40, 48)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": 1.5, "unit": "um", "axes": "ZYX"})
    rc = main(["volume", str(tmp_path / "s.tif"), "-o", str(tmp_path / "out"), "--model", "tiny-random",
               "--size", "64", "--batch-size", "2", "--device", "cpu", "-q", "--json", "--join", str(tmp_path / "j")])
    assert rc == 0
    out = read_volume(tmp_path / "out" / "labels.tif")
    assert out.shape == data.shape and out.spacing == pytest.approx((1.5, 0.5, 0.5), rel=1e-4)
    lab = np.asarray(out.data)
    doc = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert doc["n_labels"] == len(np.unique(lab[lab > 0])) >= 1
    assert (tmp_path / "out" / "labels_montage.png").exists()
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"].endswith("labels.tif") and summary["n_labels"] == doc["n_labels"]
    # --join: the run joined into a new output with the scan it segmented as the grey test's image
    joined = json.loads((tmp_path / "j" / "labels.json").read_text())
    assert summary["joined"]["labels"] == str(tmp_path / "j" / "labels.tif")
    assert joined["image"] == str(tmp_path / "s.tif") and joined["joined_from"] == str(tmp_path / "out" / "labels.tif")


def test_cli_stack_separates_ellipsoids_stacked_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Two ellipsoids end to end along z at the same place, every slice labelled on its own
    # (ids shuffled): overlap-only linking continues the first into the second; the
    # area-profile waist cut (default on) gives the second its own id.
    gt = stacked_ellipsoids()
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "sl.npy", shuffle_slices(gt, seed=3, keep_zero=True))
    dice = {}
    for ratio in ("0", "0.75"):
        rc = main(["stack", str(tmp_path / "sl.npy"), "-o", str(tmp_path / f"lab{ratio}.npy"), "-q",
                   "--waist-ratio", ratio])
        assert rc == 0
        dice[ratio] = volume_dice(np.load(tmp_path / f"lab{ratio}.npy"), gt, oracle=False)
    assert dice["0"].n_pred == 1 and min(dice["0"].dice.values()) < 0.1  # joined: one id for both
    assert dice["0.75"].n_pred == 2 and min(dice["0.75"].dice.values()) > 0.9
    bad = main(["stack", str(tmp_path / "sl.npy"), "-o", str(tmp_path / "x.npy"), "-q", "--waist-ratio", "1.5"])
    assert bad == 2 and "--waist-ratio" in capsys.readouterr().err


def test_segment_volume_default_cleanup_removes_real_debris(tmp_path: Path) -> None:
    # A bright cube over slices 2-9 plus bright specks in the same slices, away from it. The
    # slice segmenter puts cube and specks in one segment, so the linker gives them one id;
    # in 3D the specks are small, disconnected pieces of the cube's label: debris that the
    # default cleanup (min_size=64) hands to the surrounding background.
    data = np.zeros((12, 32, 32), np.float32)
    data[2:10, 10:22, 10:22] = 1000.0                  # 8 * 12 * 12 = 1152 voxels
    specks = [(3, 2, 2), (5, 28, 3), (7, 3, 27), (8, 27, 28)]
    for z, y, x in specks:
        data[z, y:y + 2, x:x + 2] = 1000.0             # 4 voxels each
    np.save(tmp_path / "v.npy", data)
    res = segment_volume(tmp_path / "v.npy", tmp_path / "o.npy", ThresholdSegmenter(edges=(128,)),
                         VolumeConfig(window="minmax"))
    pred = np.load(res.labels_path)
    truth = np.zeros(data.shape, np.int32)
    truth[2:10, 10:22, 10:22] = 1
    assert _partition_equal(pred, truth)
    for z, y, x in specks:
        assert pred[z, y, x] == pred[0, 0, 0]
    # without cleanup the specks keep the cube's id
    res0 = segment_volume(tmp_path / "v.npy", tmp_path / "o0.npy", ThresholdSegmenter(edges=(128,)),
                          VolumeConfig(window="minmax", min_size=0, min_label_size=0))
    raw = np.load(res0.labels_path)
    assert all(raw[z, y, x] == raw[5, 15, 15] for z, y, x in specks)


def _body_phantom() -> np.ndarray:
    """HU (10, 40, 40): air around an elliptic body (60 HU) that runs through every slice,
    a lung-like dark region (-600) inside it, and gas (-600) in the last two slices that
    reaches the last slice (a face the scan cuts through) but no side."""
    z, y, x = np.meshgrid(np.arange(10), np.arange(40), np.arange(40), indexing="ij")
    hu = np.full((10, 40, 40), -1000, np.int16)
    hu[((y - 20) / 15.0) ** 2 + ((x - 20) / 17.0) ** 2 < 1] = 60
    hu[(abs(y - 16) < 4) & (abs(x - 14) < 4)] = -600          # lung: inside, all slices
    hu[(z >= 8) & (abs(y - 24) < 3) & (abs(x - 26) < 3)] = -600  # gas at the end of the scan
    return hu


@pytest.mark.parametrize("clear", [True, False])
def test_volume_background_auto_clears_the_air_around_the_body_only(tmp_path: Path, clear: bool) -> None:
    hu = _body_phantom()
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "ct.nii.gz")
    seg = ThresholdSegmenter(edges=(100, 200), batch_size=4)  # lung window: air | lung, gas | body
    res = segment_volume(tmp_path / "ct.nii.gz", tmp_path / "out", seg,
                         VolumeConfig(window="lung", min_size=0, min_label_size=0, clear_outside=clear))
    pred = np.asarray(nib.load(res.labels_path).dataobj).transpose(2, 1, 0)
    air, body = hu == -1000, hu == 60
    lung = (hu == -600) & (np.arange(10)[:, None, None] < 8)
    gas = (hu == -600) & ~lung
    if clear:
        assert (pred[air] == 0).all()
    else:
        assert (pred[air] > 0).all()
    for region in (body, lung, gas):  # inside the body: always labelled
        assert (pred[region] > 0).all()
    assert len(np.unique(pred[body])) == 1 and pred[body][0] != pred[lung][0]


def test_outside_mask_is_background_on_the_shared_volumes() -> None:
    # the rule on real data: what `auto` calls outside never holds a labelled structure of the
    # CT or MR, and clearing the labels mostly outside removes the medium of the nuclei stack
    # while all 20 nuclei keep their labels
    from volume.geometry import through_plane_axis
    from volume.postprocess import clear_outside, outside_mask

    data = shared_data()
    if data is None:
        pytest.skip("shared data not found")
    for lab, img in (("ct_totalseg_abdomen/labels.nii.gz", "ct_totalseg_abdomen/image.nii.gz"),
                     ("mr_totalseg_abdomen/labels.nii.gz", "mr_totalseg_abdomen/image.nii.gz"),
                     ("microscopy_nuclei3d_cells3d/labels.tif", "microscopy_nuclei3d_cells3d/image.tif")):
        vol = read_volume(data / img)
        gt = np.asarray(read_label_volume(data / lab)[0]).astype(np.int32)
        out = outside_mask(np.asarray(vol.data), through_plane_axis(vol.spacing))
        assert out.mean() > 0.2  # there is an outside to find
        if "nuclei" in img:
            labels = gt + 1  # the medium is a label of its own, as a segmenter gives it
            assert clear_outside(labels, np.asarray(vol.data), through_plane_axis(vol.spacing)) == 1
            assert (labels[gt == 0] == 0).mean() > 0.99
            assert all((labels[gt == g] == g + 1).all() for g in np.unique(gt) if g > 0)
        else:
            assert not (out & (gt > 0)).any()
