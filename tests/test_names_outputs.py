"""Names in every output: image sidecars and overlays, tracks.json, labels.json and the
Slicer colour table; the captioner. Synthetic cross-attention with known answers (a stand-in
segmenter whose word maps sit on its segments) and the tiny model end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffseg_core.naming import pick_names, word_scores
from diffseg_core.types import SegmentNames, Segmentation
from temporal.proposals import proposals_from_labels
from tests.conftest import subprocess_env, write_frames, write_images

WORDS = ("ball", "grass", "sky", "shadow")  # red, green, blue, dark: the dominant channel


class NamingFake:
    """Segments = dominant colour class (as `tests.conftest.FakeSegmenter`); names from word
    maps that sit on the classes (coarse, noisy), scored like the real segmenter's."""

    def __init__(self, vocabulary=WORDS, swap_every: int = 0, classes=(0, 1, 2, 3)) -> None:
        self.vocabulary, self.swap_every, self.calls = tuple(vocabulary), swap_every, 0
        self.classes = list(classes)  # the colour class each word's map sits on

    def segment(self, images, generator=None):
        import cv2

        out = []
        for img in images:
            img = np.asarray(img)
            cls = np.argmax(img.astype(np.int16), axis=2).astype(np.int32)
            cls[img.max(axis=2) < 60] = 3
            present, labels = np.unique(cls, return_inverse=True)
            labels = labels.reshape(cls.shape).astype(np.int32)
            h, w = labels.shape
            small = cv2.resize(cls.astype(np.uint8), (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_NEAREST)
            rng = np.random.default_rng(self.calls)
            maps = np.stack([(small == k) + 0.3 * rng.random(small.shape) for k in self.classes]).astype(np.float32)
            if self.swap_every and self.calls % self.swap_every == 1:
                maps[[0, 1]] = maps[[1, 0]]  # a frame whose evidence calls the ball "grass"
            self.calls += 1
            ids, sc, _ = word_scores(labels, maps)
            scores = np.zeros((len(present), len(self.vocabulary)), np.float32)
            scores[ids] = sc
            names = SegmentNames(self.vocabulary, scores, [n for n, _ in pick_names(scores, self.vocabulary, 0.1)])
            props = proposals_from_labels(labels, len(present), side=max(1, min(h, w) // 8))
            out.append(Segmentation(labels=labels, proposals=props, image_hw=(h, w), names=names))
        return out


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffseg", *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- video
def test_tracks_are_named_by_their_segments_words(tmp_path):
    from temporal.api import segment_video
    from temporal.config import TrackerConfig

    frames = write_frames(tmp_path / "clip", 8)
    res = segment_video(frames, tmp_path / "out", segmenter=NamingFake(), config=TrackerConfig())
    doc = json.loads(res.tracks_json.read_text())
    assert doc["vocabulary"] == list(WORDS)
    labels = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(res.labels_dir / "00003.png"))
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(frames / "00003.png").convert("RGB"))
    by_name = {t["id"]: t["name"] for t in doc["tracks"]}
    # the track under each colour carries that colour's word
    for channel, word in enumerate(WORDS[:3]):
        ids, counts = np.unique(labels[np.argmax(rgb, axis=2) == channel], return_counts=True)
        assert by_name[int(ids[counts.argmax()])] == word
    for t in doc["tracks"]:
        assert len(t["name_votes"]) == t["n_frames"] and t["name_score"] >= 0.1  # named: the lead passed min_score


def test_a_track_keeps_its_name_when_a_few_frames_vote_otherwise(tmp_path):
    from temporal.api import segment_video

    frames = write_frames(tmp_path / "clip", 12)
    res = segment_video(frames, tmp_path / "out", segmenter=NamingFake(swap_every=4))
    doc = json.loads(res.tracks_json.read_text())
    ball = [t for t in doc["tracks"] if t["name"] == "ball"]
    assert len(ball) == 1 and ball[0]["n_frames"] == 12
    votes = [v[1] for v in ball[0]["name_votes"]]
    assert votes.count("grass") == 3 and votes.count("ball") == 9  # the outvoted frames are kept


def test_unnamed_tracks_still_have_a_name_field(tmp_path):
    from temporal.api import segment_video
    from tests.conftest import FakeSegmenter

    res = segment_video(write_frames(tmp_path / "clip", 4), tmp_path / "out", segmenter=FakeSegmenter())
    doc = json.loads(res.tracks_json.read_text())
    assert doc["vocabulary"] == [] and all(t["name"] is None and "name_score" in t for t in doc["tracks"])


# ----------------------------------------------------------------------------- volume
class GreyNamer(NamingFake):
    """Volumes: slices come as grey RGB; bright = class 0 ("organ"), dark = class 3 ("air")."""

    def segment(self, images, generator=None):
        return super().segment([np.where(np.asarray(im) > 100, np.array([255, 0, 0], np.uint8), 0).astype(np.uint8)
                                for im in images])


def test_3d_labels_are_named_by_a_vote_over_their_slices(tmp_path):
    from volume.api import segment_volume
    from volume.types import VolumeConfig

    vol = np.full((8, 48, 48), 10, np.float32)
    vol[:, 12:36, 12:36] = 200
    np.save(tmp_path / "vol.npy", vol)
    res = segment_volume(tmp_path / "vol.npy", tmp_path / "out", segmenter=GreyNamer(("organ", "air"), classes=(0, 3)),
                         config=VolumeConfig(background=None, min_size=0, min_label_size=0,
                                                             clear_outside=False))
    doc = json.loads(res.json_path.read_text())
    lab = np.load(res.labels_path)
    names = {r["id"]: r["name"] for r in doc["labels"]}
    assert names[int(lab[4, 24, 24])] == "organ" and names[int(lab[4, 2, 2])] == "air"
    assert all(len(r["name_votes"]) == 8 for r in doc["labels"])
    ctbl = (res.json_path.with_suffix(".ctbl")).read_text()
    assert f"{int(lab[4, 24, 24])} organ_{int(lab[4, 24, 24])} " in ctbl


# ----------------------------------------------------------------------------- the CLI, tiny model
def test_image_cli_writes_a_name_for_every_segment_and_a_legend(tmp_path):
    imgs = write_images(tmp_path / "in", ["a"], hw=(128, 128))
    r = _cli("image", str(imgs[0]), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "128",
             "--vocab", "red wall,blue sky", "--min-score", "0", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    assert doc["vocabulary"] == ["red wall", "blue sky"]
    assert doc["segments"] and all(s["name"] in ("red wall", "blue sky") and s["score"] >= 0 for s in doc["segments"])
    plain = _cli("image", str(imgs[0]), "-o", str(tmp_path / "plain"), "--model", "tiny-random", "--size", "128",
                 "-q", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    pdoc = json.loads((tmp_path / "plain" / "a.json").read_text())
    assert all(s["name"] is None and "score" in s for s in pdoc["segments"])
    from PIL import Image

    named = np.asarray(Image.open(tmp_path / "out" / "a_overlay.png"))
    unnamed = np.asarray(Image.open(tmp_path / "plain" / "a_overlay.png"))
    from diffseg_core.io import draw_legend

    assert (named != unnamed).any()  # the legend, and nothing but the legend:
    legend = [(s["id"], f"{s['id']} {s['name'] or 'unknown'}") for s in doc["segments"]]
    np.testing.assert_array_equal(named, draw_legend(unnamed.copy(), legend))


def test_video_cli_with_a_vocabulary_on_the_tiny_model(tmp_path):
    frames = write_frames(tmp_path / "clip", 3)
    r = _cli("video", str(frames), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "64",
             "--vocab-file", str(_vocab_file(tmp_path)), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert doc["vocabulary"] == ["ball", "grass"]
    assert doc["tracks"] and all("name" in t and len(t["name_votes"]) >= 1 for t in doc["tracks"])


def _vocab_file(tmp_path: Path) -> Path:
    p = tmp_path / "words.txt"
    p.write_text("# what the clip shows\nball\ngrass\n")
    return p


# ----------------------------------------------------------------------------- captioner
@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """A tiny random BLIP captioner with its processor, saved as a folder (what
    ``--captioner FOLDER`` takes); its captions are words of a small vocabulary."""
    transformers = pytest.importorskip("transformers")
    import torch

    d = tmp_path_factory.mktemp("tinyblip")
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] [DEC] a man riding horse on the beach dog".split()
    (d / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = transformers.BertTokenizer(str(d / "vocab.txt"), bos_token="[DEC]")
    try:
        from transformers import BlipImageProcessorPil as ImageProcessor  # no torchvision here
    except ImportError:  # pragma: no cover - older transformers
        from transformers import BlipImageProcessor as ImageProcessor
    proc = transformers.BlipProcessor(image_processor=ImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok)
    cfg = transformers.BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=16, bos_token_id=5, sep_token_id=3,
                         pad_token_id=0, max_position_embeddings=32),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    transformers.BlipForConditionalGeneration(cfg).eval().save_pretrained(d)
    proc.save_pretrained(d)
    return d


def test_captioner_from_a_folder_gives_words_of_its_vocabulary(tiny_blip):
    from diffseg_core.caption import Captioner

    cap = Captioner(str(tiny_blip), device="cpu", max_new_tokens=8)
    img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    text = cap.caption(img)
    allowed = set("a man riding horse on the beach dog".split())
    assert text and set(text.split()) <= allowed
    assert set(cap.nouns(img)) <= allowed - {"a", "on", "the", "riding"}


def test_image_cli_caption_adds_the_nouns_to_the_vocabulary(tmp_path, tiny_blip):
    imgs = write_images(tmp_path / "in", ["a"], hw=(64, 64))
    r = _cli("image", str(imgs[0]), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "64",
             "--vocab", "sky", "--caption", "--captioner", str(tiny_blip), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "a.json").read_text())
    from diffseg_core.naming import nouns_of_caption

    assert doc["vocabulary"] == ["sky", *[w for w in nouns_of_caption(doc["caption"]) if w != "sky"]]


def test_a_missing_captioner_is_a_clear_error(tmp_path):
    imgs = write_images(tmp_path / "in", ["a"], hw=(64, 64))
    r = _cli("image", str(imgs[0]), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--size", "64",
             "--caption", "--captioner", str(tmp_path / "no-such-blip"), cwd=tmp_path)
    assert r.returncode != 0
    assert "captioner" in r.stderr and "hf download" in r.stderr and "--vocab" in r.stderr
    assert "Traceback" not in r.stderr


def test_video_and_volume_caption_their_first_frame_and_middle_slice(tmp_path, tiny_blip):
    frames = write_frames(tmp_path / "clip", 3)
    r = _cli("video", str(frames), "-o", str(tmp_path / "v"), "--model", "tiny-random", "--size", "64",
             "--vocab", "zebra", "--caption", "--captioner", str(tiny_blip), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    from diffseg_core.caption import Captioner
    from diffseg_core.naming import nouns_of_caption

    cap = Captioner(str(tiny_blip), device="cpu")
    first = np.asarray(Image.open(frames / "00000.png").convert("RGB"))
    expected = ["zebra", *[w for w in nouns_of_caption(cap.caption(first)) if w != "zebra"]]
    assert json.loads((tmp_path / "v" / "tracks.json").read_text())["vocabulary"] == expected

    vol = np.zeros((5, 32, 32), np.float32)
    vol[:, 8:24, 8:24] = 100
    np.save(tmp_path / "vol.npy", vol)
    r = _cli("volume", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "vo"), "--model", "tiny-random",
             "--size", "64", "--background", "none", "--vocab", "zebra", "--caption", "--captioner", str(tiny_blip),
             "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from volume.api import middle_slice_rgb

    mid = ["zebra", *[w for w in nouns_of_caption(cap.caption(middle_slice_rgb(tmp_path / "vol.npy")))
                      if w != "zebra"]]
    assert json.loads((tmp_path / "vo" / "labels.json").read_text())["vocabulary"] == mid


def test_run_refuses_caption_with_a_clear_error(tmp_path):
    imgs = write_images(tmp_path / "in", ["a"], hw=(64, 64))
    r = _cli("run", str(imgs[0]), "-o", str(tmp_path / "out"), "--model", "tiny-random", "--caption", cwd=tmp_path)
    assert r.returncode == 2 and "--caption is not available" in r.stderr and "--vocab" in r.stderr


def test_track_links_saved_segmentations_with_attention_and_names(tmp_path):
    from PIL import Image

    from temporal.api import save_segmentation

    frames = write_frames(tmp_path / "clip", 6)
    seg_dir = tmp_path / "segs"
    seg_dir.mkdir()
    fake = NamingFake()
    for f in sorted(frames.glob("*.png")):
        save_segmentation(seg_dir / f"{f.stem}.npz", fake.segment([np.asarray(Image.open(f).convert("RGB"))])[0])
    r = _cli("track", str(frames), "--segments", str(seg_dir), "-o", str(tmp_path / "out"), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "out" / "tracks.json").read_text())
    assert doc["vocabulary"] == list(WORDS)
    assert {t["name"] for t in doc["tracks"]} >= {"ball", "grass", "sky"}
    (seg_dir / "00003.npz").write_bytes(b"not a zip")
    r = _cli("track", str(frames), "--segments", str(seg_dir), "-o", str(tmp_path / "bad"), cwd=tmp_path)
    assert r.returncode == 2 and "00003.npz" in r.stderr and "not a saved segmentation" in r.stderr


def test_itksnap_label_description_has_the_overlay_colours_and_names(tmp_path):
    import shlex

    from diffseg_core.io import label_palette
    from volume.api import segment_volume
    from volume.types import VolumeConfig

    vol = np.full((6, 40, 40), 10, np.float32)
    vol[:, 10:30, 10:30] = 200
    np.save(tmp_path / "vol.npy", vol)
    res = segment_volume(tmp_path / "vol.npy", tmp_path / "out", segmenter=GreyNamer(("organ", "air"), classes=(0, 3)),
                         config=VolumeConfig(background=None, min_size=0, min_label_size=0, clear_outside=False))
    txt = res.json_path.with_suffix(".itksnap.txt").read_text()
    rows = [shlex.split(line) for line in txt.splitlines() if line.strip() and not line.startswith("#")]
    assert rows[0][0] == "0" and rows[0][-1] == "Clear Label"
    names = {r["id"]: r["name"] for r in json.loads(res.json_path.read_text())["labels"]}
    pal = label_palette(10)
    assert len(rows) == 1 + len(names)
    for idx, r, g, b, a, vis, msh, label in rows[1:]:
        i = int(idx)
        assert [int(r), int(g), int(b)] == pal[i].tolist() and (a, vis, msh) == ("1", "1", "1")
        assert label == names[i]
