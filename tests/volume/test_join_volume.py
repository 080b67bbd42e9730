"""`diffseg join` on a volume run (`volume.api.join_volume`): the labels of one structure
that a segmenter cut into pieces changing from slice to slice, joined."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.errors import InputError
from temporal.engine.join import JoinConfig
from volume.api import join_volume
from volume.io import read_volume, write_labels
from volume.report import write_labels_json

from ..conftest import folder_digest

D, H, W = 16, 40, 64


def pieces_volume(seed: int = 0, grey_b: int = 200, cuts: tuple[int, int] = (16, 24)):
    """A nucleus cut into two labels (1 left, 2 right) whose cut moves from slice to slice,
    another nucleus (3) in one piece, ground 0. Returns (labels, uint8 image, masks)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:D, :H, :W]
    ball = (zz - 7.5) ** 2 / 1.5 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 81
    other = (zz - 7.5) ** 2 / 1.5 + (yy - 20) ** 2 + (xx - 48) ** 2 <= 49
    cut = np.where(np.arange(D) % 2, *cuts)[:, None, None]
    lab = np.zeros((D, H, W), np.int32)
    lab[ball & (xx < cut)] = 1
    lab[ball & (xx >= cut)] = 2
    lab[other] = 3
    img = 30 + rng.normal(0, 5, (D, H, W))
    img[ball & (xx < 20)] = 200 + rng.normal(0, 5, (ball & (xx < 20)).sum())
    img[ball & (xx >= 20)] = grey_b + rng.normal(0, 5, (ball & (xx >= 20)).sum())
    img[other] = 120 + rng.normal(0, 5, other.sum())
    return lab, img.clip(0, 255).astype(np.uint8), ball, other


def write_run(tmp: Path, lab: np.ndarray, img: "np.ndarray | None", name: str = "labels.npy",
              names: "dict | None" = None) -> Path:
    """A run's output folder as `diffseg stack` writes it (labels, labels.json naming the image)."""
    tmp.mkdir(exist_ok=True)
    src = tmp / "slices.npy"
    np.save(src, lab)
    extra = {}
    if img is not None:
        np.save(tmp / "image.npy", img)
        extra["image"] = str(tmp / "image.npy")
    run = tmp / "run"
    run.mkdir()
    vol = read_volume(src)
    write_labels(run / name, lab, vol)
    write_labels_json(run / "labels.json", lab, vol, 0, extra, names=names)
    return run



def test_pieces_of_a_structure_are_joined_and_the_run_kept(tmp_path):
    lab, img, ball, other = pieces_volume()
    run = write_run(tmp_path, lab, img, names={1: None, 2: "nucleus", 3: "nucleus"})
    before = folder_digest(run)
    res = join_volume(run, tmp_path / "joined")
    assert folder_digest(run) == before  # the run is left as it is
    out = np.load(res.labels_path)
    assert res.labels_path == tmp_path / "joined" / "labels.npy" and out.dtype == np.int32
    assert set(np.unique(out[ball]).tolist()) == {1}  # one label for the nucleus, its smallest id
    assert set(np.unique(out[other]).tolist()) == {3} and set(np.unique(out[~(ball | other)]).tolist()) == {0}
    doc = json.loads(res.json_path.read_text())
    assert doc["joined"] == {"2": 1} and doc["joined_from"] == str(run / "labels.npy")
    assert doc["image"] == str(tmp_path / "image.npy") and doc["slicing_axis"] == 0
    labels = {r["id"]: r for r in doc["labels"]}
    assert sorted(labels) == [1, 3] and labels[1]["voxels"] == int(ball.sum())
    assert labels[1]["name"] == "nucleus"  # carried from its named piece
    assert res.n_labels == 2 and res.montage_path is not None and res.montage_path.exists()
    ctbl = (tmp_path / "joined" / "labels.ctbl").read_text()
    assert "\n1 nucleus" in ctbl and "\n2 " not in ctbl  # the colour table lists the ids left


def test_the_grey_test_keeps_unlike_neighbours_apart(tmp_path):
    # two structures of unlike grey (the right half is darker) whose boundary the segmenter
    # misplaces by a column either way: with the image, the two labels stay apart
    lab, img, ball, _ = pieces_volume(grey_b=60, cuts=(19, 21))
    run = write_run(tmp_path, lab, img)
    res = join_volume(run, tmp_path / "with_image.npy")
    assert json.loads(res.json_path.read_text())["joined"] == {}
    assert len(np.unique(np.load(res.labels_path)[ball])) == 2
    # the same labels over a flat image look alike: joined (the grey test is what parts them)
    np.save(tmp_path / "flat.npy", np.full_like(img, 128))
    res = join_volume(run, tmp_path / "flat_image.npy", image_path=tmp_path / "flat.npy")
    assert json.loads(res.json_path.read_text())["joined"] == {"2": 1}
    assert json.loads(res.json_path.read_text())["image"] == str(tmp_path / "flat.npy")


def test_formats_and_axis_follow_the_run(tmp_path):
    # a NIfTI run linked along its last array axis: the exchange runs along the run's slicing axis
    lab, img, ball, _ = pieces_volume()
    lab_x, img_x, ball_x = (np.ascontiguousarray(a.transpose(2, 1, 0)) for a in (lab, img, ball))
    run = write_run(tmp_path, lab_x, img_x, name="labels.nii.gz")
    doc = json.loads((run / "labels.json").read_text())
    doc["slicing_axis"] = 2
    (run / "labels.json").write_text(json.dumps(doc))
    cfg = JoinConfig(exchange=0.2)  # along the slices the pieces trade a third of their voxels
    res = join_volume(run, tmp_path / "joined", config=cfg)
    assert res.labels_path.name == "labels.nii.gz" and res.axis == 2
    import nibabel as nib

    out = np.asarray(nib.load(res.labels_path).dataobj).transpose(2, 1, 0)  # file (i, j, k) -> array (D, H, W)
    assert set(np.unique(out[ball_x]).tolist()) == {1}
    doc["slicing_axis"] = 0  # across the cut (along x) they trade a few: not joined at 0.2
    (run / "labels.json").write_text(json.dumps(doc))
    assert json.loads(join_volume(run, tmp_path / "z.nii.gz", config=cfg).json_path.read_text())["joined"] == {}


def test_join_volume_refuses_what_it_cannot_join(tmp_path):
    lab, img, _, _ = pieces_volume()
    run = write_run(tmp_path, lab, img)
    with pytest.raises(InputError, match="another output"):
        join_volume(run, run / "labels.npy")
    with pytest.raises(InputError, match="not the output of diffseg volume / stack"):
        join_volume(tmp_path / "slices.npy", tmp_path / "o.npy")  # labels without a labels.json
    np.save(tmp_path / "small.npy", img[:4])
    with pytest.raises(InputError, match="differs from the labels"):
        join_volume(run, tmp_path / "o.npy", image_path=tmp_path / "small.npy")
    with pytest.raises(InputError, match="unknown output extension"):
        join_volume(run, tmp_path / "o.png")
    (tmp_path / "image.npy").rename(tmp_path / "moved.npy")
    with pytest.raises(InputError, match="not there any more; give it"):
        join_volume(run, tmp_path / "o.npy")
    assert join_volume(run, tmp_path / "o.npy", image_path=tmp_path / "moved.npy").n_labels == 2
    no_image = write_run(tmp_path / "b", lab, None)
    with pytest.raises(InputError, match="names no image"):
        join_volume(no_image, tmp_path / "o2.npy")


def test_join_cli_on_a_volume_run(tmp_path, capsys):
    from diffseg.cli import main

    lab, img, ball, _ = pieces_volume()
    run = write_run(tmp_path, lab, img)
    rc = main(["join", str(run), "-o", str(tmp_path / "j.tif"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["n_labels"] == 2 and out["labels"] == str(tmp_path / "j.tif")
    rc = main(["join", str(run), "-o", str(tmp_path / "k.npy"), "--exchange", "0.9", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n_labels"] == 3  # 0.9 of the voxels traded: none
    rc = main(["join", str(run), "-o", str(tmp_path / "l.npy"), "--frames", "x"])
    assert rc == 2 and "--frames is for a video run" in capsys.readouterr().err
    rc = main(["join", str(tmp_path / "nothing.npy"), "-o", str(tmp_path / "m.npy")])
    assert rc == 2 and "not the output of diffseg volume / stack" in capsys.readouterr().err
    rc = main(["join", str(tmp_path), "-o", str(tmp_path / "m.npy")])  # a folder of neither kind
    assert rc == 2 and "neither a video run" in capsys.readouterr().err


def test_a_stack_run_names_its_image_for_the_join(tmp_path, monkeypatch):
    # diffseg stack --image records the image's absolute path: the join finds it by itself
    from volume.api import stack_labels

    lab, img, ball, _ = pieces_volume()
    np.save(tmp_path / "slices.npy", lab)
    np.save(tmp_path / "image.npy", img)
    monkeypatch.chdir(tmp_path)
    res = stack_labels("slices.npy", "run", image_path="image.npy")
    assert json.loads(res.json_path.read_text())["image"] == str(tmp_path / "image.npy")
    monkeypatch.chdir(tmp_path / "run")
    joined = join_volume(tmp_path / "run", tmp_path / "joined")
    assert json.loads(joined.json_path.read_text())["image"] == str(tmp_path / "image.npy")
    no_image = stack_labels(tmp_path / "slices.npy", tmp_path / "run2")
    assert json.loads(no_image.json_path.read_text())["image"] is None


def test_the_image_is_read_as_the_run_read_it(tmp_path):
    # a 4-D image: the run recorded which volume it used (`--index`), and the join reads that one
    lab, img, ball, _ = pieces_volume(grey_b=60, cuts=(19, 21))
    run = write_run(tmp_path, lab, None)
    np.save(tmp_path / "image4d.npy", np.stack([np.full_like(img, 128), img]))
    doc = json.loads((run / "labels.json").read_text())
    doc.update(image=str(tmp_path / "image4d.npy"), image_index=1)
    (run / "labels.json").write_text(json.dumps(doc))
    res = join_volume(run, tmp_path / "j1.npy")
    assert json.loads(res.json_path.read_text())["joined"] == {}  # volume 1: unlike grey, kept apart
    doc["image_index"] = 0  # the flat volume: alike, joined
    (run / "labels.json").write_text(json.dumps(doc))
    assert json.loads(join_volume(run, tmp_path / "j0.npy").json_path.read_text())["joined"] == {"2": 1}
    del doc["image_index"]
    (run / "labels.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="4-D data"):
        join_volume(run, tmp_path / "j.npy")


def test_the_grey_slices_are_windowed_as_the_run_windowed_them(tmp_path):
    # a stack run with --window 50,100 saw both halves (grey 200 and 150) clipped to white:
    # its join does too, and joins them; with the default window their grey parts them
    from volume.api import stack_labels
    from volume.types import VolumeConfig

    lab, img, ball, _ = pieces_volume(grey_b=150, cuts=(19, 21))
    np.save(tmp_path / "slices.npy", lab)
    np.save(tmp_path / "image.npy", img)
    runs = {}
    for name, window in (("clipped", (50.0, 100.0)), ("default", "auto")):
        cfg = VolumeConfig(background=0, min_size=0, min_label_size=0, window=window)
        res = stack_labels(tmp_path / "slices.npy", tmp_path / name, cfg, image_path=tmp_path / "image.npy")
        doc = json.loads(res.json_path.read_text())
        assert doc["image_window"] == (list(window) if name == "clipped" else window)
        assert doc["image_percentiles"] == [1.0, 99.0]
        runs[name] = join_volume(tmp_path / name, tmp_path / f"{name}_joined")
    clipped = json.loads(runs["clipped"].json_path.read_text())
    assert clipped["joined"] != {} and len(np.unique(np.load(runs["clipped"].labels_path)[ball])) == 1
    assert clipped["image_window"] == [50.0, 100.0]  # a join of the join windows the same way
    assert json.loads(runs["default"].json_path.read_text())["joined"] == {}


def test_stack_records_the_index_it_read_the_image_with(tmp_path):
    from volume.api import stack_labels
    from volume.types import VolumeConfig

    lab, img, _, _ = pieces_volume()
    np.save(tmp_path / "slices.npy", np.stack([lab, lab]))
    np.save(tmp_path / "image.npy", np.stack([img, img]))
    res = stack_labels(tmp_path / "slices.npy", tmp_path / "run", VolumeConfig(background=0, min_size=0,
                       min_label_size=0, index=1), image_path=tmp_path / "image.npy")
    doc = json.loads(res.json_path.read_text())
    assert doc["image"] == str(tmp_path / "image.npy") and doc["image_index"] == 1 and "image_series" not in doc
    assert join_volume(tmp_path / "run", tmp_path / "joined").n_labels >= 1  # reads volume 1 of the image


def test_stack_then_join_in_one_command(tmp_path, capsys):
    from diffseg.cli import main

    lab, img, ball, other = pieces_volume()
    np.save(tmp_path / "slices.npy", lab)
    np.save(tmp_path / "image.npy", img)
    rc = main(["stack", str(tmp_path / "slices.npy"), "-o", str(tmp_path / "run"), "--image",
               str(tmp_path / "image.npy"), "--join", str(tmp_path / "joined.tif"), "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["joined"]["labels"] == str(tmp_path / "joined.tif")
    doc = json.loads((tmp_path / "joined.json").read_text())
    assert doc["joined_from"] == str(tmp_path / "run" / "labels.npy") and doc["n_labels"] == out["joined"]["n_labels"]
    assert "joined" not in json.loads((tmp_path / "run" / "labels.json").read_text())  # the run is kept


def test_stack_join_is_refused_before_the_run_when_it_could_not_run(tmp_path, capsys):
    from diffseg.cli import main

    lab, img, _, _ = pieces_volume()
    np.save(tmp_path / "slices.npy", lab)
    np.save(tmp_path / "image.npy", img)
    base = ["stack", str(tmp_path / "slices.npy"), "-o", str(tmp_path / "run.npy")]
    for extra, said in ((["--join", str(tmp_path / "j.npy")], "--image"),  # no image: no grey test
                        (["--image", str(tmp_path / "image.npy"), "--join", str(tmp_path / "run.npy")],
                         "another output than -o"),
                        (["--image", str(tmp_path / "image.npy"), "--no-json", "--join", str(tmp_path / "j.npy")],
                         "--no-json")):
        assert main(base + extra) == 2
        assert said in capsys.readouterr().err
        assert not (tmp_path / "run.npy").exists()  # nothing was computed
