"""Joining the tracks of one object after a run (`temporal.engine.join`, `join_run`, `diffseg join`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.errors import InputError
from diffseg_core.io import read_labels, save_image
from temporal.api import join_run
from temporal.engine import join as joinmod
from temporal.engine.join import Exchange, JoinConfig, apply_joins, join_label_maps
from temporal.types import TrackedFrame
from temporal.writer import VideoOutputWriter

from ..conftest import folder_digest
from .conftest import texture

HW = (64, 96)
SIDE = 24


def piece_video(n: int = 10, cuts=(6, 18), ids=(1, 2, 3), seed: int = 0, colours=((220, 140, 40), (220, 140, 40)),
                speed: int = 2):
    """An object moving right over a textured ground, linked as two tracks whose cut jumps
    between ``cuts`` (columns inside the object) every frame; the ground is one track.

    Returns (RGB frames, label maps, ground-truth object masks)."""
    rng = np.random.default_rng(seed)
    ground = texture(rng, *HW, (60, 140, 60))
    halves = [texture(rng, SIDE, SIDE, c) for c in colours]
    left, right, bg = ids
    frames, labels, masks = [], [], []
    for t in range(n):
        x0, y0 = 10 + speed * t, 20
        img = ground.copy()
        obj = np.where(np.arange(SIDE)[None, :, None] < SIDE // 2, halves[0], halves[1])
        img[y0:y0 + SIDE, x0:x0 + SIDE] = obj
        lab = np.full(HW, bg, np.int32)
        cut = cuts[t % len(cuts)]
        lab[y0:y0 + SIDE, x0:x0 + cut] = left
        lab[y0:y0 + SIDE, x0 + cut:x0 + SIDE] = right
        mask = np.zeros(HW, bool)
        mask[y0:y0 + SIDE, x0:x0 + SIDE] = True
        frames.append(img)
        labels.append(lab)
        masks.append(mask)
    return frames, labels, masks


def test_pieces_whose_cut_moves_are_joined_and_the_ground_is_not():
    frames, labels, masks = piece_video()
    joined, mapping = join_label_maps(labels, frames)
    assert mapping == {2: 1}
    for lab, m in zip(joined, masks):
        assert set(np.unique(lab[m]).tolist()) == {1}  # the object is one track in every frame
        assert set(np.unique(lab[~m]).tolist()) == {3}


def test_pieces_that_keep_their_pixels_are_not_joined():
    # the same two pieces, still, with a cut that stays: nothing is traded
    frames, labels, _ = piece_video(cuts=(12,), speed=0)
    assert join_label_maps(labels, frames)[1] == {}


def test_neighbours_that_look_different_stay_apart_where_the_frames_are_given():
    # two halves of different colours whose boundary the segmenter misplaces by 12 pixels
    # every frame: they trade as pieces do; only the colour test tells them apart
    frames, labels, _ = piece_video(colours=((220, 40, 40), (40, 40, 220)))
    assert join_label_maps(labels, frames)[1] == {}
    assert join_label_maps(labels, None)[1] == {2: 1}
    assert join_label_maps(labels, frames, JoinConfig(colour_sd=10.0))[1] == {2: 1}


def test_the_threshold_on_the_share_traded():
    frames, labels, _ = piece_video()
    ex = Exchange()
    for f, lab in zip(frames, labels):
        ex.add(lab, f)
    # the share by its definition: pixels passing 1 -> 2 or 2 -> 1 between consecutive
    # frames, against those plus the pixels that keep 1 or 2
    traded = kept = 0
    for a, b in zip(labels[:-1], labels[1:]):
        traded += np.sum((a == 1) & (b == 2)) + np.sum((a == 2) & (b == 1))
        kept += np.sum((a == 1) & (b == 1)) + np.sum((a == 2) & (b == 2))
    share = traded / (traded + kept)
    assert 0.3 < share < 0.7
    assert ex.groups(JoinConfig(exchange=share * 0.99)) == {2: 1}
    assert ex.groups(JoinConfig(exchange=min(share * 1.01, 1.0))) == {}


def test_a_group_takes_its_smallest_id():
    frames, labels, _ = piece_video(ids=(9, 4, 7))
    joined, mapping = join_label_maps(labels, frames)
    assert mapping == {9: 4}
    assert 9 not in np.unique(np.concatenate([j.ravel() for j in joined]))


def test_three_pieces_join_into_one_through_the_group():
    frames, labels, masks = piece_video()
    # a third piece: the bottom rows of the right piece, whose cut also moves
    for t, lab in enumerate(labels):
        rows = 4 if t % 2 else 10
        y1 = 20 + SIDE
        lab[y1 - rows:y1][lab[y1 - rows:y1] == 2] = 5
    joined, mapping = join_label_maps(labels, frames)
    assert mapping == {2: 1, 5: 1}
    assert all(set(np.unique(j[m]).tolist()) == {1} for j, m in zip(joined, masks))


def test_a_group_counts_what_all_its_members_traded():
    # label maps built from exact counts: frames alternate A, B; each pixel group below is
    # one id in A and one in B, so every transition counts each group once
    groups = [(1, 1, 100), (2, 2, 10), (5, 5, 100), (1, 2, 40), (1, 5, 12), (2, 5, 12)]
    a = np.concatenate([np.full(k, x) for x, _, k in groups])[None, :]
    b = np.concatenate([np.full(k, y) for _, y, k in groups])[None, :]
    maps = [a, b] * 3
    # 1 and 2 trade 40 / (40 + 110) first; the pair (1 + 2, 5) then trades 24 of 24 + 150 + 100
    # (0.088), though each alone traded 12 of 212 / 122 with 5
    assert join_label_maps(maps, None, JoinConfig(exchange=0.07))[1] == {2: 1, 5: 1}
    assert join_label_maps(maps, None, JoinConfig(exchange=0.09))[1] == {2: 1}


def test_folding_the_pair_tables_changes_nothing(monkeypatch):
    frames, labels, _ = piece_video(n=12)
    want = join_label_maps(labels, frames)[1]
    monkeypatch.setattr(joinmod.Exchange, "_FOLD", 2)
    ex = Exchange()
    for f, lab in zip(frames, labels):
        ex.add(lab, f)
        assert len(ex._pairs) < 2
    assert ex.groups() == want == {2: 1}


def test_colour_sums_by_histogram_equal_the_sums_per_pixel(monkeypatch):
    frames, labels, _ = piece_video(n=4, colours=((220, 40, 40), (40, 40, 220)))
    labels = [lab * 1000 for lab in labels]  # sparse ids
    sums = {}
    for cells in (joinmod._HISTOGRAM_CELLS, 0):  # 0: every frame too many ids for the histograms
        monkeypatch.setattr(joinmod, "_HISTOGRAM_CELLS", cells)
        ex = Exchange()
        for f, lab in zip(frames, labels):
            ex.add(lab, f)
        sums[cells] = (ex._sums.copy(), ex._squares.copy())
    (a, a2), (b, b2) = sums.values()
    assert np.array_equal(a, b) and np.array_equal(a2, b2)
    m = np.concatenate([lab.ravel() for lab in labels]) == 1000
    red = np.concatenate([f[..., 0].ravel() for f in frames])[m].astype(np.float64)
    assert a[1000, 0] == red.sum() and a2[1000, 0] == (red ** 2).sum()


def test_bad_input_is_named():
    frames, labels, _ = piece_video(n=3)
    ex = Exchange()
    ex.add(labels[0], frames[0])
    with pytest.raises(ValueError, match="shape"):
        ex.add(labels[1][:10], frames[1][:10])
    with pytest.raises(ValueError, match="with every label map or with none"):
        ex.add(labels[1], None)
    with pytest.raises(ValueError, match=r"shape \(64, 96, 3\) was expected"):
        ex.add(labels[1], frames[1][..., 0])  # grey after colour
    with pytest.raises(ValueError, match="uint8 image"):
        ex.add(labels[1], frames[1].astype(np.float32))
    with pytest.raises(ValueError, match=r"\(RGB\) or \(64, 96\) \(grey\)"):
        Exchange().add(labels[1], frames[1][..., :2])
    grey = Exchange()
    grey.add(labels[0], frames[0][..., 0])  # a grey slice: one channel from then on
    with pytest.raises(ValueError, match=r"shape \(64, 96, 1\) was expected"):
        grey.add(labels[1], frames[1])
    with pytest.raises(ValueError, match="2-D"):
        Exchange().add(np.zeros((2, 3, 4), np.int32))
    with pytest.raises(ValueError, match=r"\[0, 2\*\*31\)"):
        Exchange().add(np.full((2, 2), -1))
    with pytest.raises(ValueError, match="3 label maps but 2 frames"):
        join_label_maps(labels, frames[:2])
    with pytest.raises(InputError, match="exchange"):
        JoinConfig(exchange=0)
    with pytest.raises(InputError, match="colour_sd"):
        JoinConfig(colour_sd=-1)


def test_apply_joins_keeps_other_ids():
    lab = np.array([[0, 1, 2], [5, 2, 7]], np.int32)
    out = apply_joins(lab, {2: 1, 7: 5})
    assert out.tolist() == [[0, 1, 1], [5, 1, 5]] and out.dtype == np.int32
    assert apply_joins(lab, {}).tolist() == lab.tolist()


# --- a finished run -------------------------------------------------------------------------


def write_run(tmp: Path, n: int = 10, name: "str | None" = None) -> tuple[Path, Path, list]:
    """A frames folder and a run folder as `diffseg track` writes them (the pieces video)."""
    frames, labels, masks = piece_video(n=n)
    fdir = tmp / "frames"
    fdir.mkdir()
    for t, f in enumerate(frames):
        save_image(fdir / f"f{t:03d}.png", f)
    run = tmp / "run"
    w = VideoOutputWriter(run, fps=10.0, write_overlay=False,
                          meta={"job": "track", "source": str(fdir), "start": 0, "end": None, "stride": 1})
    for t, lab in enumerate(labels):
        w.put(f"f{t:03d}", frames[t], TrackedFrame(t, lab, np.unique(lab).astype(np.int32)))
    w.close()
    if name is not None:  # a named track, as a run with --vocab writes it
        doc = json.loads((run / "tracks.json").read_text())
        doc["vocabulary"] = [name, "grass"]
        for tr in doc["tracks"]:
            tr["name"], tr["name_score"] = ({2: (name, 0.9), 3: ("grass", 0.8)}).get(tr["id"], (None, None))
        (run / "tracks.json").write_text(json.dumps(doc))
    return fdir, run, masks



def test_join_run_writes_a_joined_run_and_keeps_the_run(tmp_path):
    fdir, run, masks = write_run(tmp_path, name="dog")
    before = folder_digest(run)
    res = join_run(run, tmp_path / "joined")
    assert res.complete and res.n_frames == 10 and res.n_tracks == 2
    assert folder_digest(run) == before  # the run read is left as it was
    doc = json.loads(res.tracks_json.read_text())
    assert doc["complete"] is True and doc["joined"] == {"2": 1} and doc["joined_from"] == str(run)
    assert doc["join"] == JoinConfig().to_dict() and doc["job"] == "track" and doc["source"] == str(fdir)
    tracks = {t["id"]: t for t in doc["tracks"]}
    assert sorted(tracks) == [1, 3] and tracks[1]["n_frames"] == 10
    assert tracks[1]["area"] == [SIDE * SIDE] * 10  # both pieces in the one track
    assert (tracks[1]["name"], tracks[1]["name_score"]) == ("dog", 0.9)  # carried from the named piece
    assert tracks[3]["name"] == "grass" and doc["vocabulary"] == ["dog", "grass"]
    for t, m in enumerate(masks):
        lab = read_labels(res.labels_dir / f"f{t:03d}.png")
        assert set(np.unique(lab[m]).tolist()) == {1} and set(np.unique(lab[~m]).tolist()) == {3}
    assert res.overlay is not None and res.overlay.exists()


@pytest.mark.parametrize("name", ["dog", None])
def test_the_joined_overlay_shows_the_carried_names(tmp_path, monkeypatch, name):
    import temporal.writer

    legends = []
    monkeypatch.setattr(temporal.writer, "draw_legend", lambda img, items: legends.append(items))
    _, run, _ = write_run(tmp_path, n=4, name=name)
    join_run(run, tmp_path / "joined")
    if name is None:
        assert legends == []  # an unnamed run's overlay has no legend
    else:
        assert legends == [[(1, "1 dog"), (3, "3 grass")]] * 4


def test_the_writer_fields_are_what_the_writer_writes(tmp_path):
    # join_run carries every other field of a run's tracks.json over as the run's own
    from temporal.writer import WRITER_FIELDS

    frames, labels, _ = piece_video(n=2)
    w = VideoOutputWriter(tmp_path / "r", write_overlay=False)
    for t, lab in enumerate(labels):
        w.put(f"f{t}", frames[t], TrackedFrame(t, lab, np.unique(lab).astype(np.int32)))
    w.close()
    doc = json.loads((tmp_path / "r" / "tracks.json").read_text())
    assert set(doc) == set(WRITER_FIELDS) | {"vocabulary"}  # the vocabulary goes with the names


def test_join_run_refuses_what_it_cannot_join(tmp_path):
    fdir, run, _ = write_run(tmp_path)
    with pytest.raises(InputError, match="another output folder"):
        join_run(run, run)
    with pytest.raises(InputError, match="not a tracked video"):
        join_run(fdir, tmp_path / "o1")
    other = tmp_path / "other"
    other.mkdir()
    for p in sorted(fdir.iterdir())[:7]:
        (other / p.name).write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="7 frames, but the run has 10"):
        join_run(run, tmp_path / "o2", frames_source=other)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for k, p in enumerate(sorted(fdir.iterdir())):
        (renamed / f"g{k:03d}.png").write_bytes(p.read_bytes())
    with pytest.raises(InputError, match="is not the run's frame f000"):
        join_run(run, tmp_path / "o3", frames_source=renamed, write_overlay=False)
    assert not (tmp_path / "o3" / "tracks.json").exists() or \
        json.loads((tmp_path / "o3" / "tracks.json").read_text())["complete"] is False
    fdir.rename(tmp_path / "moved")
    with pytest.raises(InputError, match="not there any more"):
        join_run(run, tmp_path / "o4")
    doc = json.loads((run / "tracks.json").read_text())
    doc["complete"] = False
    (run / "tracks.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="did not complete"):
        join_run(run, tmp_path / "o5", frames_source=tmp_path / "moved")


def test_join_cli(tmp_path, capsys):
    from diffseg.cli import main

    _, run, masks = write_run(tmp_path)
    rc = main(["join", str(run), "-o", str(tmp_path / "j"), "--no-overlay", "--exchange", "0.9", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["tracks"] == 3  # 0.9 of the pixels traded: nothing this clear
    assert not (tmp_path / "j" / "overlay.mp4").exists()
    rc = main(["join", str(run), "-o", str(tmp_path / "k"), "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["tracks"] == 2
    rc = main(["join", str(run), "-o", str(run)])
    assert rc == 2 and "another output folder" in capsys.readouterr().err
    rc = main(["join", str(run), "-o", str(tmp_path / "l"), "--exchange", "0"])
    assert rc == 2 and "exchange" in capsys.readouterr().err


def _track_inputs(tmp: Path) -> tuple[Path, Path]:
    """A frames folder and the pieces video's label maps as `diffseg track` reads them."""
    frames, labels, _ = piece_video()
    fdir, sdir = tmp / "frames", tmp / "segs"
    fdir.mkdir()
    sdir.mkdir()
    for t, (f, lab) in enumerate(zip(frames, labels)):
        save_image(fdir / f"f{t:03d}.png", f)
        np.save(sdir / f"f{t:03d}.npy", lab)
    return fdir, sdir


def test_track_then_join_in_one_command(tmp_path, capsys, monkeypatch):
    from diffseg.cli import main

    fdir, _ = _track_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    # the IoU-only linker keeps the segmenter's moving cut (the engine carves it still)
    rc = main(["track", "frames", "--segments", "segs", "-o", "run", "--join", "joined", "--linker", "iou",
               "--no-overlay", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["joined"]["output"] == "joined"
    run_doc = json.loads((tmp_path / "run" / "tracks.json").read_text())
    joined_doc = json.loads((tmp_path / "joined" / "tracks.json").read_text())
    assert "joined" not in run_doc and len(run_doc["tracks"]) == out["tracks"]  # the run is kept as it is
    assert joined_doc["complete"] is True and joined_doc["joined"]  # the pieces' tracks joined
    assert len(joined_doc["tracks"]) == out["joined"]["tracks"] == out["tracks"] - len(joined_doc["joined"])
    # the run names its inputs by absolute paths: joined again from anywhere, without --frames
    assert run_doc["source"] == str(fdir) and run_doc["segments"] == str(tmp_path / "segs")
    monkeypatch.chdir(tmp_path / "segs")
    assert main(["join", str(tmp_path / "run"), "-o", str(tmp_path / "again"), "--no-overlay"]) == 0
    again = json.loads((tmp_path / "again" / "tracks.json").read_text())
    assert again["joined"] == joined_doc["joined"]


def test_track_join_refusals(tmp_path, capsys):
    from diffseg.cli import main

    fdir, sdir = _track_inputs(tmp_path)
    run = tmp_path / "run"
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(run), "--join", str(run) + "/"])
    assert rc == 2 and "--join" in capsys.readouterr().err
    assert not (run / "tracks.json").exists()  # refused before anything was computed
    (fdir / "f005.png").write_bytes(b"not a png")  # the run fails part-way: nothing to join
    rc = main(["track", str(fdir), "--segments", str(sdir), "-o", str(run), "--join", str(tmp_path / "j"),
               "--no-overlay"])
    assert rc == 2 and "f005.png" in capsys.readouterr().err
    assert not (tmp_path / "j" / "tracks.json").exists()


def test_an_incomplete_run_is_not_joined(tmp_path):
    import argparse
    import dataclasses

    from temporal.api import track_segments
    from temporal.cli import _then_join

    fdir, sdir = _track_inputs(tmp_path)
    res = track_segments(fdir, sdir, tmp_path / "run", write_overlay=False)
    args = argparse.Namespace(join=str(tmp_path / "j"), no_overlay=True)
    stopped = dataclasses.replace(res, complete=False, error="decoding failed at frame 5")
    r = _then_join(args, stopped, "track")  # a run stopped early (a video that fails to decode part-way)
    assert r.code == 2 and "not joined" in r.line and "incomplete" in r.line and "joined" not in r.doc
    assert not (tmp_path / "j").exists()
    r = _then_join(args, res, "track")
    assert r.code == 0 and r.doc["joined"]["output"] == str(tmp_path / "j")
    assert json.loads((tmp_path / "j" / "tracks.json").read_text())["complete"] is True
