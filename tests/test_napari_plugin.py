"""The napari plugin, headless: the npe2 manifest validates and points at real functions; our
outputs open as Labels layers (never images) with our colours, names and spacing; the writer's
files open again; the widget's function segments images, volumes and videos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from diffseg.napari_plugin import get_reader, read_output, segment_layer, write_labels
from tests.conftest import FakeSegmenter, REPO, write_frames, write_images

npe2 = pytest.importorskip("npe2")


def test_the_manifest_is_valid_and_its_commands_import():
    import importlib

    pm = npe2.PluginManifest.from_file(REPO / "diffseg" / "napari.yaml")
    assert pm.name == "diffseg-vv"
    for cmd in pm.contributions.commands:
        mod, fn = cmd.python_name.split(":")
        assert callable(getattr(importlib.import_module(mod), fn))
    assert {w.command for w in pm.contributions.writers} == {"diffseg-vv.write_labels"}
    assert pm.contributions.writers[0].layer_types == ["labels"]
    found = npe2.PluginManager()
    found.discover()  # through the installed package's napari.manifest entry point, as napari finds it
    assert found.get_manifest("diffseg-vv").display_name == pm.display_name


def test_video_output_opens_as_labels_with_names_and_colours(tmp_path):
    from diffseg_core.io import label_palette
    from temporal.api import segment_video

    res = segment_video(write_frames(tmp_path / "frames", 4), tmp_path / "clip", segmenter=FakeSegmenter())
    reader = get_reader(str(res.out_dir))
    assert reader is not None
    [(data, meta, kind)] = reader(str(res.out_dir))
    assert kind == "labels" and data.shape[0] == 4 and data.dtype.kind == "i"
    doc = json.loads(res.tracks_json.read_text())
    assert sorted(meta["features"]["id"]) == sorted(t["id"] for t in doc["tracks"])
    pal = label_palette(max(meta["features"]["id"]) + 1)
    for i in meta["features"]["id"]:
        assert np.allclose(meta["colormap"][i][:3], pal[i] / 255.0)  # the overlay's colour
    assert get_reader(str(tmp_path / "frames")) is None  # not ours: left to other readers


def test_image_and_volume_outputs_open_as_labels(tmp_path):
    from diffseg.cli import main

    img = write_images(tmp_path / "in", ["a"], hw=(64, 64))[0]
    assert main(["image", str(img), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "64", "-q"]) == 0
    [(lab, meta, kind)] = read_output(tmp_path / "out" / "a.png")
    assert kind == "labels" and lab.shape == (64, 64) and meta["features"]["id"]
    assert get_reader(str(img)) is None  # an input image without our sidecar
    np.save(tmp_path / "lab.npy", np.arange(1, 4, dtype=np.int32).repeat(64).reshape(3, 8, 8))
    assert main(["stack", str(tmp_path / "lab.npy"), "-o", str(tmp_path / "v" / "labels.nii.gz"), "-q"]) == 0
    [(vol, vmeta, vkind)] = get_reader(str(tmp_path / "v" / "labels.nii.gz"))(str(tmp_path / "v" / "labels.nii.gz"))
    assert vkind == "labels" and vol.shape == (3, 8, 8) and len(vmeta["scale"]) == 3


def test_writer_files_open_again_as_labels(tmp_path):
    lab = np.zeros((4, 10, 12), np.int32)
    lab[:, 2:6, 3:9] = 3
    lab[1:, 7:, :] = 5
    meta = {"name": "mine", "scale": (2.0, 0.5, 0.5), "features": {"id": [3, 5], "name": ["liver", "kidney"]}}
    for ext in (".tif", ".nii.gz", ".nrrd", ".npy"):
        written = write_labels(str(tmp_path / f"labels{ext}"), lab, meta)
        [(back, m, kind)] = get_reader(written[0])(written[0])
        assert kind == "labels" and np.array_equal(back, lab), ext
        if ext != ".npy":
            assert np.allclose(m["scale"], (2.0, 0.5, 0.5))
        assert dict(zip(m["features"]["id"], m["features"]["name"])) == {3: "liver", 5: "kidney"}, ext
    written = write_labels(str(tmp_path / "slice.png"), lab[1], meta)
    [(back2, m2, _)] = read_output(written[0])
    assert np.array_equal(back2, lab[1]) and dict(zip(m2["features"]["id"], m2["features"]["name"])) == {3: "liver", 5: "kidney"}
    with pytest.raises(Exception, match="non-negative"):
        write_labels(str(tmp_path / "bad.tif"), -lab, meta)


def test_our_label_tiffs_and_ome_zarr_labels_open_as_labels_without_a_sidecar(tmp_path):
    pytest.importorskip("zarr", minversion="3")
    import tifffile

    from volume.io import write_labels as write_volume_labels
    from volume.types import Volume

    lab = np.zeros((3, 600, 40), np.int32)
    lab[:, 100:300, 5:30] = 2
    vol = Volume(data=lab, spacing=(3.0, 1.0, 1.0), spacing_known=True, unit="um")
    write_volume_labels(tmp_path / "labels.tif", lab, vol)
    assert not (tmp_path / "labels.json").exists()
    [(back, meta, kind)] = get_reader(str(tmp_path / "labels.tif"))(str(tmp_path / "labels.tif"))
    assert kind == "labels" and np.array_equal(back, lab) and np.allclose(meta["scale"], (3.0, 1.0, 1.0))
    tifffile.imwrite(tmp_path / "image.tif", lab.astype(np.uint16))
    assert get_reader(str(tmp_path / "image.tif")) is None  # a TIFF not ours: left to the image readers
    written = write_labels(str(tmp_path / "w.ome.zarr"), lab, {"scale": (3.0, 1.0, 1.0),
                                                              "features": {"id": [2], "name": ["cell"]}})
    [(levels, zmeta, zkind)] = get_reader(written[0])(written[0])
    assert zkind == "labels" and zmeta["multiscale"] and [lv.shape for lv in levels] == [(3, 600, 40), (3, 300, 20), (3, 150, 10)]
    assert np.array_equal(levels[1][:], lab[:, ::2, ::2]) and zmeta["scale"] == (3.0, 1.0, 1.0)
    assert dict(zip(zmeta["features"]["id"], zmeta["features"]["name"])) == {2: "cell"}


def test_the_widget_segments_images_volumes_and_videos():
    rgb = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    out = segment_layer(rgb, model="tiny-random", size=64)
    assert out.shape == (64, 80) and out.min() >= 1
    vol = (np.random.default_rng(1).random((3, 32, 32)) * 200).astype(np.float32)
    v = segment_layer(vol, model="tiny-random", size=64)
    assert v.shape == (3, 32, 32) and v.dtype == np.int32
    video = np.stack([rgb] * 3)
    t = segment_layer(video, model="tiny-random", size=64)
    assert t.shape == (3, 64, 80) and (t > 0).all()
    with pytest.raises(Exception, match="cannot tell"):
        segment_layer(np.zeros((2, 3, 4, 5, 6)), model="tiny-random")


def test_the_link_widget_joins_independently_labelled_frames_and_slices():
    from diffseg.napari_plugin import link_layer

    lab = np.zeros((4, 30, 40), np.int32)
    for t in range(4):  # two objects, their ids shuffled per frame (as a 2-D segmenter gives them)
        a, b = (1, 2) if t % 2 == 0 else (7, 3)
        lab[t, 5:15, 3 + t:13 + t] = a
        lab[t, 18:28, 20:30] = b
    for mode in ("video", "volume"):
        out = link_layer(lab, mode=mode, background=0)
        assert out.shape == lab.shape and (out[lab == 0] == 0).all()
        first = {int(out[t, 10, 8]) for t in range(4)}
        second = {int(out[t, 22, 25]) for t in range(4)}
        assert len(first) == 1 and len(second) == 1 and first != second, mode
    frames = np.zeros((4, 30, 40, 3), np.uint8)
    frames[lab > 0] = 200
    out = link_layer(lab, frames, mode="video")
    assert len({int(out[t, 10, 8]) for t in range(4)}) == 1
    with pytest.raises(Exception, match="integer"):
        link_layer(lab.astype(np.float32))


def test_the_link_widget_joins_the_pieces_of_a_nucleus():
    from diffseg.napari_plugin import link_layer
    from tests.volume.test_join_volume import pieces_volume

    # a nucleus cut into two labels whose cut moves slice to slice (two columns either way)
    lab, img, ball, other = pieces_volume(cuts=(18, 22))
    linked = link_layer(lab, img, mode="volume", background=0)
    joined = link_layer(lab, img, mode="volume", background=0, join=True)
    assert len(np.unique(linked[ball])) > 1 and set(np.unique(joined[ball]).tolist()) == {int(joined[ball][0])}
    assert int(joined[ball][0]) not in np.unique(joined[other]) and (joined[lab == 0] == 0).all()
    with pytest.raises(Exception, match="join needs the image"):
        link_layer(lab, mode="volume", join=True)
