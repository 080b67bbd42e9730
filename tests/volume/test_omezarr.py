"""OME-Zarr in and out: images written by ome-zarr-py (0.5) and by hand (0.4) read lazily with
their axes and scale; label images we write validate as OME-NGFF (ome-zarr-models), open in
ome-zarr-py's reader (napari-ome-zarr's) as labels, and are replaced only when complete;
big label volumes are built in a scratch memory map with the same result."""
from __future__ import annotations

import errno
import json
import warnings

import numpy as np
import pytest

zarr = pytest.importorskip("zarr", minversion="3")

from diffseg_core.errors import InputError, OutputError  # noqa: E402
from diffseg_core.io import label_palette  # noqa: E402
from tests.volume.helpers import spheres  # noqa: E402
from volume import io as vio  # noqa: E402
from volume.api import stack_labels  # noqa: E402
from volume.omezarr import ZarrStack  # noqa: E402
from volume.types import Volume  # noqa: E402


def write_ngff04(path, data, axes="zyx", scale=(2.0, 0.5, 0.25), unit="micrometer", chunks=None):
    """An OME-NGFF 0.4 image as the spec writes it (one level), with zarr only."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", data=data, chunks=chunks or (1,) * (data.ndim - 2) + data.shape[-2:],
                   chunk_key_encoding={"name": "v2", "separator": "/"})
    ax = [{"name": n, "type": "space" if n in "zyx" else ("channel" if n == "c" else "time"),
           **({"unit": unit} if n in "zyx" else {})} for n in axes]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": ax, "datasets": [
        {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * (len(axes) - 3) + list(scale)}]}]}]
    return path


def test_an_ngff_image_reads_lazily_with_its_axes_and_scale(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4000, (2, 5, 30, 20)).astype(np.uint16)
    p = write_ngff04(tmp_path / "img.ome.zarr", data, axes="czyx")
    with pytest.raises(InputError, match=r"--index 0\.\.1"):
        vio.read_volume(p)
    vol = vio.read_volume(p, index=1)
    assert isinstance(vol.data, ZarrStack) and vol.source_format == "ome-zarr"
    assert vol.shape == (5, 30, 20) and vol.spacing == (2.0, 0.5, 0.25) and vol.unit == "um" and vol.spacing_known
    np.testing.assert_array_equal(np.asarray(vol.data), data[1])
    np.testing.assert_array_equal(vol.data[:, 7], data[1, :, 7])  # a plane across the slices
    # lazy: a slice reads only its own chunks (the others are gone: they would read as 0)
    for z in (0, 1, 2, 4):
        for chunk in (p / "0" / "1" / str(z)).rglob("*"):
            chunk.unlink() if chunk.is_file() else None
    assert not vol.data[0].any()  # (the chunks were there to delete: nothing is cached)
    np.testing.assert_array_equal(vol.data[3], data[1, 3])
    np.testing.assert_array_equal(vol.slice_values(0, 3), data[1, 3].astype(np.float32))


def test_ome_zarr_py_images_read_too_and_bad_groups_are_named(tmp_path):
    ome_zarr = pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    data = np.random.default_rng(1).integers(0, 255, (6, 64, 48)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_image(data, zarr.group(store=parse_url(str(tmp_path / "py.ome.zarr"), mode="w").store), axes="zyx")
    vol = vio.read_volume(tmp_path / "py.ome.zarr")  # whatever NGFF version this ome-zarr writes
    assert vol.shape == (6, 64, 48) and ome_zarr
    np.testing.assert_array_equal(vol.data[2], data[2])
    write_ngff04(tmp_path / "flat.ome.zarr", data[0], axes="yx", scale=(1.0, 1.0, 1.0)[:2] + ())
    with pytest.raises(InputError, match="2-D plane"):
        vio.read_volume(tmp_path / "flat.ome.zarr")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match="without OME-Zarr 'multiscales'"):
        vio.read_volume(tmp_path / "empty.zarr")
    zarr.create_array(str(tmp_path / "bare.zarr"), data=data)  # a plain array: ZYX, spacing unknown
    bare = vio.read_volume(tmp_path / "bare.zarr")
    assert bare.shape == data.shape and not bare.spacing_known
    b2r = zarr.open_group(str(tmp_path / "b2r.zarr"), mode="w", zarr_format=2)  # bioformats2raw layout
    b2r.attrs["bioformats2raw.layout"] = 3
    write_ngff04(tmp_path / "b2r.zarr" / "0", data)
    assert vio.read_volume(tmp_path / "b2r.zarr").shape == data.shape
    with pytest.raises(InputError, match="no image '7'"):
        vio.read_volume(tmp_path / "b2r.zarr", series="7")
    assert vio.file_format(tmp_path / "b2r.zarr") == "ome-zarr"  # (a folder, yet not DICOM)


def _labels() -> np.ndarray:
    lab = np.zeros((6, 600, 300), np.int32)
    lab[1:4, 10:400, 20:200] = 3
    lab[2:5, 450:590, 100:290] = 300  # > 255: a uint16 volume
    return lab


def test_written_label_images_are_valid_ngff_and_open_as_labels(tmp_path):
    lab = _labels()
    like = Volume(data=lab, spacing=(2.0, 0.5, 0.5), spacing_known=True, unit="um", source_format="tiff")
    out = vio.write_labels(tmp_path / "labels.ome.zarr", lab, like, names={3: "nucleus"},
                           provenance={"segmenter": {"random_weights": True}})
    g = zarr.open_group(str(out), mode="r")
    ms = g.attrs["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]  # 600 -> 300 -> 150 px
    for d, f in zip(ms["datasets"], (1, 2, 4)):
        np.testing.assert_array_equal(g[d["path"]][:], lab[:, ::f, ::f])  # ids, never blended
        assert d["coordinateTransformations"][0]["scale"] == [2.0, 0.5 * f, 0.5 * f]
    assert g["0"].dtype == np.uint16 and {a["unit"] for a in ms["axes"]} == {"micrometer"}
    il = g.attrs["image-label"]
    pal = label_palette(301)
    assert {c["label-value"]: c["rgba"][:3] for c in il["colors"]} == {3: list(pal[3]), 300: list(pal[300])}
    assert {q["label-value"]: q.get("name") for q in il["properties"]} == {3: "nucleus", 300: None}
    assert g.attrs["diffseg"]["segmenter"]["random_weights"] is True
    models = pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v04.image_label import ImageLabel

    assert isinstance(models.open_ome_zarr(str(out)), ImageLabel)  # validates against the spec
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        [node] = [n for n in Reader(parse_url(str(out)))() if any(isinstance(s, Label) for s in n.specs)]
    assert any(isinstance(s, Multiscales) for s in node.specs)
    np.testing.assert_array_equal(np.asarray(node.data[0]), lab)
    back, vol = vio.read_label_volume(out)  # and we read our own back
    np.testing.assert_array_equal(np.asarray(back), lab)
    assert vol.spacing == (2.0, 0.5, 0.5)


def test_an_interrupted_write_leaves_the_previous_result(tmp_path, monkeypatch):
    lab = _labels()
    like = Volume(data=lab, spacing_known=False, source_format="npy")
    out = vio.write_labels(tmp_path / "labels.ome.zarr", lab, like)

    class Boom(Exception):
        pass

    calls = {"n": 0}

    class Failing:  # a source that fails half-way (disk error, Ctrl-C...)
        shape, dtype = lab.shape, lab.dtype

        def __getitem__(self, key):
            calls["n"] += 1
            if calls["n"] > 2:
                raise Boom()
            return np.zeros_like(lab[key])

    monkeypatch.setattr("volume.geometry.SLAB_VOXELS", 2 * 600 * 300)
    with pytest.raises(Boom):
        vio.write_labels(tmp_path / "labels.ome.zarr", Failing(), like)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["0"][:], lab)  # untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["labels.ome.zarr"]  # no half-written folder
    vio.write_labels(out, np.zeros_like(lab), like)  # a complete new one replaces it
    assert not zarr.open_group(str(out), mode="r")["0"][:].any()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["labels.ome.zarr"]


def test_volume_and_stack_run_on_ome_zarr_end_to_end(tmp_path):
    from diffseg.cli import main

    gt = spheres((12, 40, 48))
    write_ngff04(tmp_path / "gt.ome.zarr", gt.astype(np.uint8), scale=(1.0, 1.0, 1.0))
    assert main(["stack", str(tmp_path / "gt.ome.zarr"), "-o", str(tmp_path / "s"), "-q"]) == 0
    back, _ = vio.read_label_volume(tmp_path / "s" / "labels.ome.zarr")  # the input's own format
    ref = stack_labels(tmp_path / "gt.ome.zarr", tmp_path / "ref.npy")
    np.testing.assert_array_equal(np.asarray(back), np.load(ref.labels_path))
    img = write_ngff04(tmp_path / "img.ome.zarr", (gt * 60).astype(np.uint16))
    assert main(["volume", str(img), "-o", str(tmp_path / "v"), "--model", "tiny-random", "--size", "64",
                 "--device", "cpu", "-q"]) == 0
    doc = json.loads((tmp_path / "v" / "labels.json").read_text())
    out, vol = vio.read_label_volume(tmp_path / "v" / "labels.ome.zarr")
    assert doc["n_labels"] == len(np.unique(np.asarray(out)[np.asarray(out) > 0])) and vol.spacing == (2.0, 0.5, 0.25)
    prov = zarr.open_group(str(tmp_path / "v" / "labels.ome.zarr"), mode="r").attrs["diffseg"]
    assert prov["segmenter"]["random_weights"] is True and prov["input"]["shape"] == [12, 40, 48]
    assert main(["run", str(img), "-o", str(tmp_path / "r"), "--model", "tiny-random", "--size", "64",
                 "--device", "cpu", "-q"]) == 0  # a Zarr folder is one volume, written in its own format
    runs, _ = vio.read_label_volume(tmp_path / "r" / "volumes" / "img.ome.zarr")
    np.testing.assert_array_equal(np.asarray(runs), np.asarray(out))


def test_big_label_volumes_are_built_in_a_scratch_map_with_the_same_result(tmp_path, monkeypatch):
    gt = spheres((12, 40, 48))
    np.save(tmp_path / "gt.npy", gt)
    ram = stack_labels(tmp_path / "gt.npy", tmp_path / "ram.npy")
    monkeypatch.setattr(vio, "IN_MEMORY_LIMIT", 0)
    buf = vio.label_buffer((4, 5, 6), tmp_path / "x" / "out.npy")
    assert isinstance(buf, np.memmap) and not buf.any() and list((tmp_path / "x").iterdir()) == []  # unlinked
    disk = stack_labels(tmp_path / "gt.npy", tmp_path / "disk" / "labels.npy")
    np.testing.assert_array_equal(np.load(disk.labels_path), np.load(ram.labels_path))
    assert sorted(x.name for x in (tmp_path / "disk").iterdir()) == sorted(
        ["labels.npy", "labels.json", "labels_montage.png", "labels.ctbl", "labels.itksnap.txt"])

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vio.os, "posix_fallocate", full, raising=False)
    with pytest.raises(OutputError, match="out.npy"):
        vio.label_buffer((4, 5, 6), tmp_path / "y" / "out.npy")


    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(vio.os, "posix_fallocate", unsupported, raising=False)
    buf = vio.label_buffer((4, 5, 6), tmp_path / "z" / "out.npy")  # a file system without fallocate: still a map
    assert isinstance(buf, np.memmap) and buf.shape == (4, 5, 6) and not buf.any()


def test_every_label_format_says_what_made_it(tmp_path):
    lab = _labels()[:, :40, :30]
    like = Volume(data=lab, spacing=(2.0, 1.0, 1.0), spacing_known=True, unit="mm", source_format="nifti")
    prov = {"segmenter": {"config": {"model": "tiny-random"}, "random_weights": True}}
    for name in ("a.tif", "b.tif"):  # uint16 (ImageJ) and int32 TIFFs
        vio.write_labels(tmp_path / name, lab if name == "a.tif" else lab * 300, like, provenance=prov)
        assert vio.tiff_provenance(tmp_path / name) == prov
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", lab.astype(np.uint16))
    assert vio.tiff_provenance(tmp_path / "plain.tif") is None
    import nibabel as nib

    vio.write_labels(tmp_path / "c.nii.gz", lab, like, provenance=prov)
    [ext] = nib.load(tmp_path / "c.nii.gz").header.extensions
    assert json.loads(ext.get_content())["diffseg_labels"] == prov
    hd = pytest.importorskip("highdicom")
    from tests.volume.helpers import write_dicom_series

    write_dicom_series(tmp_path / "ct", np.full(lab.shape, 1000, np.uint16))
    ct = vio.read_volume(tmp_path / "ct")
    vio.write_labels(tmp_path / "d.dcm", (lab > 0).astype(np.int32), ct, provenance=prov)
    algo = hd.seg.segread(tmp_path / "d.dcm").SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert "model=tiny-random" in algo.AlgorithmParameters and "random_weights=True" in algo.AlgorithmParameters
