"""`diffseg export davis | coco | mot`: a tracked video's folder in other tools' formats,
checked with the tools' own readers (PIL palette indices as davis2017-evaluation reads them,
pycocotools for the RLE)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffseg.cli import main
from diffseg_core.io import read_labels
from temporal.export import export_coco, export_davis, export_mot
from tests.conftest import FakeSegmenter, write_frames


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    from temporal.api import segment_video

    d = tmp_path_factory.mktemp("tracked")
    res = segment_video(write_frames(d / "frames", 6), d / "clip", segmenter=FakeSegmenter())
    assert res.complete and res.n_tracks >= 3
    return res.out_dir


def _ids(folder: Path) -> list[np.ndarray]:
    doc = json.loads((folder / "tracks.json").read_text())
    return [read_labels(folder / "labels" / f"{s}.png") for s in doc["frames"]]


def test_davis_export_is_what_the_official_evaluator_reads(tracked, tmp_path):
    r = export_davis(tracked, tmp_path / "res")
    seq = tmp_path / "res" / "clip"
    ours = _ids(tracked)
    doc = json.loads((tracked / "tracks.json").read_text())
    assert r["frames"] == len(ours) and r["objects"] == len(doc["tracks"]) and r["dropped"] == 0
    first = {t["id"]: (t["first_frame"], t["id"]) for t in doc["tracks"]}
    order = sorted(first, key=first.get)  # objects numbered by first appearance
    for stem, lab in zip(doc["frames"], ours):
        img = Image.open(seq / f"{stem}.png")
        assert img.mode == "P"
        got = np.array(img)  # davis2017-evaluation: np.array(Image.open(path)) -> palette indices
        assert got.shape == lab.shape and got.max() <= len(order)
        expected = np.zeros_like(got)
        for k, tid in enumerate(order):
            expected[lab == tid] = k + 1
        np.testing.assert_array_equal(got, expected)


def test_davis_export_keeps_the_largest_tracks(tracked, tmp_path):
    doc = json.loads((tracked / "tracks.json").read_text())
    biggest = max(doc["tracks"], key=lambda t: sum(t["area"]))
    r = export_davis(tracked, tmp_path / "res", sequence="seq", max_objects=1)
    assert r["objects"] == 1 and r["dropped"] == len(doc["tracks"]) - 1 and r["ids"] == {"1": biggest["id"]}
    for stem, lab in zip(doc["frames"], _ids(tracked)):
        got = np.array(Image.open(tmp_path / "res" / "seq" / f"{stem}.png"))
        np.testing.assert_array_equal(got, (lab == biggest["id"]).astype(np.uint8))


def test_coco_export_decodes_to_the_tracks_with_pycocotools(tracked, tmp_path):
    from pycocotools import mask as mask_utils

    r = export_coco(tracked, tmp_path / "vis.json")
    doc = json.loads((tmp_path / "vis.json").read_text())
    ours = _ids(tracked)
    assert r["tracks"] == len(doc["annotations"]) and doc["categories"] == [{"id": 1, "name": "object"}]
    v = doc["videos"][0]
    assert (v["height"], v["width"], v["length"]) == (*ours[0].shape, len(ours))
    for a in doc["annotations"]:
        for pos, lab in enumerate(ours):
            m = lab == a["track_id"]
            if not m.any():
                assert a["segmentations"][pos] is None and a["bboxes"][pos] is None
                continue
            rle = dict(a["segmentations"][pos], counts=a["segmentations"][pos]["counts"].encode())
            np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), m)
            assert a["areas"][pos] == int(mask_utils.area(rle)) == int(m.sum())
            assert a["bboxes"][pos] == [int(v) for v in mask_utils.toBbox(rle)]


def test_coco_categories_are_the_tracks_names(tmp_path):
    from temporal.api import segment_video
    from tests.test_names_outputs import NamingFake

    res = segment_video(write_frames(tmp_path / "frames", 4), tmp_path / "clip", segmenter=NamingFake())
    export_coco(res.out_dir, tmp_path / "vis.json")
    doc = json.loads((tmp_path / "vis.json").read_text())
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    names = {t["id"]: t["name"] for t in json.loads(res.tracks_json.read_text())["tracks"]}
    for a in doc["annotations"]:
        assert cats[a["category_id"]] == (names[a["track_id"]] or "unknown")


def test_mot_export_boxes_match_the_label_maps(tracked, tmp_path):
    r = export_mot(tracked, tmp_path / "mot.txt")
    rows = [list(map(int, line.split(",")[:6])) for line in (tmp_path / "mot.txt").read_text().splitlines()]
    ours = _ids(tracked)
    assert r["boxes"] == len(rows) == sum(len(np.unique(lab[lab > 0])) for lab in ours)
    for f, tid, x, y, w, h in rows:
        ys, xs = np.nonzero(ours[f - 1] == tid)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)


def test_export_cli_and_bad_input(tracked, tmp_path, capsys):
    assert main(["export", "davis", str(tracked), "-o", str(tmp_path / "d"), "-q"]) == 0
    assert main(["export", "coco", str(tracked), "-o", str(tmp_path / "c.json"), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["tracks"] >= 3
    assert main(["export", "mot", str(tmp_path), "-o", str(tmp_path / "m.txt")]) == 2
    assert "not a tracked video" in capsys.readouterr().err
    assert main(["export", "davis", str(tracked), "-o", str(tmp_path / "d"), "--max-objects", "255"]) == 2
    assert "1..254" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tracks.json").write_text(json.dumps({"complete": False, "status": "failed", "error": "killed",
                                                    "frames": [], "tracks": []}))
    assert main(["export", "coco", str(broken), "-o", str(tmp_path / "x.json")]) == 2
    assert "did not complete" in capsys.readouterr().err
