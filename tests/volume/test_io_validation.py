"""Inputs that used to give silent wrong results or a traceback after the work was done: each
is now one `InputError` naming the file, raised while reading (before any model work)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from diffseg_core.errors import InputError
from diffseg_core.io import read_labels
from volume.io import read_label_volume, read_volume


def _nifti_with_header(path: Path, data: np.ndarray, edit) -> Path:
    """Write ``data`` as a single-file NIfTI whose header ``edit(hdr)`` changed by hand
    (nibabel's image constructor would repair what we want to keep broken)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr.set_sform(np.eye(4), code=2)
    hdr.set_qform(np.eye(4), code=1)
    edit(hdr)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + np.asfortranarray(data).tobytes(order="F"))
    return path


def test_complex_nifti_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.full((4, 5, 3), 1 + 2j, np.complex64), np.eye(4)), tmp_path / "c.nii.gz")
    with pytest.raises(InputError, match=r"c\.nii\.gz: NIfTI holds complex"):
        read_volume(tmp_path / "c.nii.gz")


def test_rgb_nifti_is_refused(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii.gz")
    with pytest.raises(InputError, match=r"rgb\.nii\.gz: .*one value per voxel"):
        read_volume(tmp_path / "rgb.nii.gz")


def test_singular_affine_is_refused_when_reading(tmp_path: Path) -> None:
    def singular(hdr):
        hdr["srow_z"] = [0.0, 0.0, 0.0, 0.0]
        hdr["qform_code"] = 0

    p = _nifti_with_header(tmp_path / "s.nii", np.ones((4, 5, 3), np.float32), singular)
    with pytest.raises(InputError, match=r"s\.nii: the NIfTI affine .* singular"):
        read_volume(p)


def test_zero_pixdim_is_an_error_as_documented(tmp_path: Path) -> None:
    def zero(hdr):
        hdr["pixdim"][3] = 0.0
        hdr["sform_code"] = 0
        hdr["qform_code"] = 0

    p = _nifti_with_header(tmp_path / "z.nii", np.ones((4, 5, 3), np.float32), zero)
    with pytest.raises(InputError, match=r"z\.nii: voxel spacing \(pixdim\) must be positive"):
        read_volume(p)


@pytest.mark.parametrize("dtype, value", [(np.int64, 2**33 + 5), (np.uint64, 2**63 + 1), (np.uint32, 2**31)])
def test_ids_beyond_int32_are_refused_not_wrapped(tmp_path: Path, dtype, value) -> None:
    a = np.zeros((3, 4, 5), dtype)
    a[1, 2, 3] = value
    np.save(tmp_path / "v.npy", a)
    with pytest.raises(InputError, match=f"v.npy: label volume has ids up to {value}"):
        read_label_volume(tmp_path / "v.npy")
    np.save(tmp_path / "m.npy", a[1])
    with pytest.raises(InputError, match=f"m.npy: label map has ids up to {value}"):
        read_labels(tmp_path / "m.npy")


def test_negative_ids_are_refused_in_every_label_format(tmp_path: Path) -> None:
    import tifffile

    from temporal.io import read_segment_labels

    a = np.zeros((4, 5), np.int16)
    a[0, 0] = -3
    np.save(tmp_path / "00000.npy", a)
    tifffile.imwrite(tmp_path / "00001.tif", a)
    for stem in ("00000", "00001"):
        with pytest.raises(InputError, match="negative values"):
            read_segment_labels(tmp_path, stem, (4, 5))
    tifffile.imwrite(tmp_path / "vol.tif", np.stack([a, a, a]))
    with pytest.raises(InputError, match=r"vol\.tif: label volume has negative values"):
        read_label_volume(tmp_path / "vol.tif")


def test_evaluate_volume_with_empty_ground_truth_is_an_error(tmp_path: Path, capsys) -> None:
    from diffseg.cli import main

    np.save(tmp_path / "gt.npy", np.zeros((3, 4, 5), np.int32))
    np.save(tmp_path / "pred.npy", np.ones((3, 4, 5), np.int32))
    assert main(["evaluate", "volume", str(tmp_path / "pred.npy"), str(tmp_path / "gt.npy"), "-q"]) == 2
    err = capsys.readouterr()
    assert "gt.npy: ground truth has no labels" in err.err and "NaN" not in err.out


def test_evaluate_volume_reads_lazily_read_stacks_whole(tmp_path: Path, capsys) -> None:
    # a compressed TIFF (what Fiji and most tools save) is read page by page, and a folder of
    # slice images file by file: evaluate failed on them with "'TiffPages' object has no
    # attribute 'max'"
    import json

    import tifffile
    from PIL import Image

    from diffseg.cli import main

    lab = np.zeros((4, 12, 14), np.uint16)
    lab[:, 2:8, 3:9] = 5
    lab[1:, 9:, :] = 9
    tifffile.imwrite(tmp_path / "gt.tif", lab, compression="zlib")
    (tmp_path / "pred").mkdir()
    for k in range(4):
        Image.fromarray(lab[k]).save(tmp_path / "pred" / f"{k}.png")
    assert main(["evaluate", "volume", str(tmp_path / "pred"), str(tmp_path / "gt.tif"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["mean_dice"] == 1.0 and doc["n_gt"] == 2


def test_evaluate_video_with_empty_ground_truth_names_the_folder(tmp_path: Path) -> None:
    from diffseg_core.io import save_labels_png
    from temporal.evaluate import evaluate_video_dirs

    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
        save_labels_png(tmp_path / d / "00000.png", np.zeros((4, 5), np.int32))
    with pytest.raises(InputError, match=f"{tmp_path / 'gt'}: ground truth has no objects"):
        evaluate_video_dirs(tmp_path / "pred", tmp_path / "gt")
