"""Names for segments: scores from synthetic cross-attention with known answers, prompts,
votes over frames, and the tiny model end to end."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import diffseg_core.naming as naming
from diffseg_core.aggregate import aggregate_cross
from diffseg_core.config import NamingConfig, SegmenterConfig
from diffseg_core.errors import InputError
from diffseg_core.naming import (NameVotes, name_segments, nouns_of_caption, parse_vocabulary, plan_prompts,
                                 read_vocabulary, word_maps, word_scores)


def _scene(h: int = 96, w: int = 128) -> np.ndarray:
    """Three segments: a left band (0), a disc (1) and the rest (2)."""
    lab = np.full((h, w), 2, np.int32)
    lab[:, : w // 4] = 0
    yy, xx = np.mgrid[:h, :w]
    lab[(yy - h // 2) ** 2 + (xx - 3 * w // 4) ** 2 < (h // 4) ** 2] = 1
    return lab


def _maps_on(lab: np.ndarray, hw: tuple[int, int], order: list[int], noise: float = 0.2, seed: int = 0) -> np.ndarray:
    """One map per word at a coarse size, concentrated on segment ``order[v]`` plus noise."""
    rng = np.random.default_rng(seed)
    small = cv2.resize(lab.astype(np.uint8), hw[::-1], interpolation=cv2.INTER_NEAREST)
    return np.stack([(small == k) + noise * rng.random(hw) for k in order]).astype(np.float32)


@pytest.mark.parametrize("voting", ["mean", "majority"])
@pytest.mark.parametrize("hw", [(96, 128), (24, 32), (12, 16)])
def test_maps_that_concentrate_on_segments_name_them_exactly(voting, hw):
    lab = _scene()
    vocab = ["sky", "sun", "sea", "boat"]  # "boat" looks nowhere in particular
    maps = _maps_on(lab, hw, [2, 1, 0])
    maps = np.concatenate([maps, np.full((1, *hw), maps.mean(), np.float32)])
    assert name_segments(lab, maps, vocab, voting=voting) == {0: "sea", 1: "sun", 2: "sky"}


def test_scores_are_shares_that_sum_to_one_and_follow_the_resize():
    lab = _scene()
    maps = _maps_on(lab, (24, 32), [0, 1, 2], noise=0.5, seed=3)
    ids, scores, areas = word_scores(lab, maps)
    assert ids.tolist() == [0, 1, 2] and areas.tolist() == np.bincount(lab.ravel()).tolist()
    np.testing.assert_allclose(scores.sum(1), 1, atol=1e-5)
    # the same as resizing each (normalised) map with OpenCV's bilinear and averaging shares
    norm = maps / maps.reshape(3, -1).sum(1)[:, None, None]
    big = np.stack([cv2.resize(m, (128, 96), interpolation=cv2.INTER_LINEAR) for m in norm])
    share = big / big.sum(0)
    expected = np.stack([share[:, lab == k].mean(1) for k in range(3)])
    np.testing.assert_allclose(scores, expected, atol=1e-5)


def test_row_blocks_do_not_change_the_scores(monkeypatch):
    lab = _scene(101, 67)
    maps = _maps_on(lab, (13, 9), [0, 1, 2], noise=1.0, seed=1)
    ref = word_scores(lab, maps, "majority")[1], word_scores(lab, maps, "mean")[1]
    monkeypatch.setattr(naming, "SCORE_ROWS", 7)
    np.testing.assert_array_equal(word_scores(lab, maps, "majority")[1], ref[0])
    np.testing.assert_allclose(word_scores(lab, maps, "mean")[1], ref[1], atol=1e-6)


def test_no_confident_word_gives_none_and_min_score_decides():
    lab = _scene()
    flat = np.ones((3, 8, 8), np.float32)  # every word everywhere: each gets a third
    assert set(name_segments(lab, flat, ["a", "b", "c"]).values()) == {None}
    assert set(name_segments(lab, flat[:2], ["a", "b"]).values()) == {None}  # a tie of two, too
    maps = _maps_on(lab, (24, 32), [0, 1, 2], noise=3.0, seed=2)  # weak evidence
    top = np.sort(word_scores(lab, maps)[1], axis=1)
    lead = top[:, -1] - top[:, -2]
    named = name_segments(lab, maps, ["a", "b", "c"], min_score=float(lead[1]) + 1e-4)
    assert named[1] is None and named[0] == ("a" if lead[0] > lead[1] else None)
    assert name_segments(lab, maps, ["a", "b", "c"], min_score=0.0) == {0: "a", 1: "b", 2: "c"}


def test_negative_labels_are_ignored_and_ids_need_not_be_consecutive():
    lab = _scene()
    lab = np.where(lab == 2, -1, np.where(lab == 1, 40, 7)).astype(np.int64)
    maps = _maps_on(_scene(), (24, 32), [0, 1])
    assert name_segments(lab, maps, ["left", "disc"]) == {7: "left", 40: "disc"}


@pytest.mark.parametrize("bad, match", [
    (np.ones((2, 8, 8), np.float32), r"\(3, h, w\)"),
    (np.full((3, 8, 8), np.nan, np.float32), "finite"),
    (-np.ones((3, 8, 8), np.float32), "non-negative"),
])
def test_bad_token_maps_are_clear_errors(bad, match):
    with pytest.raises(InputError, match=match):
        name_segments(_scene(), bad, ["a", "b", "c"])


def test_bad_labels_and_voting_are_clear_errors():
    maps = np.ones((1, 4, 4), np.float32)
    with pytest.raises(InputError, match="integers"):
        name_segments(np.zeros((4, 4), np.float32), maps, ["a"])
    with pytest.raises(InputError, match="voting"):
        name_segments(np.zeros((4, 4), np.int32), maps, ["a"], voting="median")
    with pytest.raises(InputError, match="min_score"):
        name_segments(np.zeros((4, 4), np.int32), maps, ["a"], min_score=2)


def test_vocabulary_parsing_and_files(tmp_path):
    assert parse_vocabulary(" person,dog ,, Dog,\n traffic   light") == ("person", "dog", "traffic light")
    f = tmp_path / "vocab.txt"
    f.write_text("# classes\nperson\ndog, cat  # pets\n\n")
    assert read_vocabulary(f) == ("person", "dog", "cat")
    with pytest.raises(InputError, match="empty"):
        parse_vocabulary(" , \n")
    with pytest.raises(InputError, match="cannot read"):
        read_vocabulary(tmp_path / "missing.txt")
    assert NamingConfig(vocabulary="a, b").vocabulary == ("a", "b")


def test_caption_nouns():
    assert nouns_of_caption("a man riding a horse on the beach") == ("man", "horse", "beach")
    assert nouns_of_caption("two black dogs playing with a red frisbee in a park") == ("dogs", "frisbee", "park")
    assert nouns_of_caption("the and of") == ()


def test_prompt_layout_splits_and_pools_multi_token_words():
    tok = {"cat": [7], "traffic light": [8, 9], "giraffe": [10, 11, 12]}
    plan = plan_prompts(list(tok), tok.__getitem__, bos=0, eos=2, pad=1, separator=[5], max_length=8)
    # room for 6 tokens: "cat , traffic light" fills 4, "giraffe" needs 1 + 3: a new prompt
    assert plan.ids.tolist() == [[0, 7, 5, 8, 9, 2, 1, 1], [0, 10, 11, 12, 2, 1, 1, 1]]
    assert plan.tokens == ((0, (1,)), (0, (3, 4)), (1, (1, 2, 3)))
    tm = np.random.default_rng(0).random((2, 8, 3, 3)).astype(np.float32)
    wm = word_maps(tm, plan)
    np.testing.assert_allclose(wm[1], tm[0, [3, 4]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(wm[2], tm[1, [1, 2, 3]].mean(0), rtol=1e-6)
    with pytest.raises(InputError, match="at most 6"):
        plan_prompts(["x"], lambda w: [9] * 7, bos=0, eos=2, pad=1, separator=[5], max_length=8)


def test_aggregate_cross_normalises_per_pixel_and_weights_resolutions():
    g = torch.Generator().manual_seed(0)
    fine = torch.softmax(torch.randn(1, 16, 5, generator=g), -1)  # 4x4 grid, 5 tokens
    coarse = torch.softmax(torch.randn(1, 4, 5, generator=g), -1)  # 2x2
    out = aggregate_cross([fine, coarse], [(4, 4), (2, 2)], (4, 4))
    assert tuple(out.shape) == (1, 5, 4, 4)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 4, 4))
    up = torch.nn.functional.interpolate(coarse.reshape(1, 2, 2, 5).permute(0, 3, 1, 2), size=(4, 4),
                                         mode="bilinear", align_corners=False)
    expected = fine.reshape(1, 4, 4, 5).permute(0, 3, 1, 2) * (4 / 6) + up / up.sum(1, keepdim=True) * (2 / 6)
    torch.testing.assert_close(out, expected)


# ----------------------------------------------------------------------------- votes
def test_track_names_are_area_weighted_votes_over_frames():
    votes = NameVotes(("person", "dog"))
    seg = np.zeros((10, 10), np.int64)
    seg[:, 5:] = 1
    ids = np.where(seg == 0, 3, 9)  # track 3 on segment 0, track 9 on segment 1
    votes.add(0, ids, seg, np.array([[0.9, 0.1], [0.2, 0.8]]))
    small = np.where(np.arange(10)[None, :] < 1, 3, 0).repeat(10, 0)  # track 3 small in frame 1
    votes.add(1, small, np.zeros((10, 10), np.int64), np.array([[0.0, 1.0]]))
    name, score = votes.name(3)
    assert name == "person" and score == pytest.approx((45 - 15) / 60)  # shares 0.75 / 0.25
    assert votes.name(9)[0] == "dog" and votes.name(42) == (None, 0.0)
    rec = votes.record(3)
    assert rec["name_votes"] == [[0, "person", 0.8], [1, "dog", 1.0]]
    votes.relabel({9: 3})
    assert votes.areas[3] == 110 and 9 not in votes.totals


def test_the_shown_name_never_flickers_when_votes_alternate():
    votes = NameVotes(("person", "dog"))
    ids = np.ones((4, 4), np.int64)
    seg = np.zeros((4, 4), np.int64)
    shown = []
    leader = []
    for t in range(40):  # frames alternate, and so does the leader of the running totals
        row = [0.6, 0.4] if t % 2 == 0 else [0.39, 0.61]
        votes.add(t, ids, seg, np.array([row]))
        shown.append(votes.shown(1))
        leader.append(int(votes.totals[1].argmax()))
    assert sum(a != b for a, b in zip(leader, leader[1:])) >= 15  # a plain running vote would flicker
    changes = sum(a != b for a, b in zip(shown, shown[1:]))
    assert changes == 0 and shown[-1] == "person"
    per_frame = [r[1] for r in votes.history[1]]
    assert sum(a != b for a, b in zip(per_frame, per_frame[1:])) == 39  # the raw votes do flicker


def test_the_shown_name_changes_once_when_the_evidence_really_turns():
    votes = NameVotes(("person", "dog"))
    ids, seg = np.ones((4, 4), np.int64), np.zeros((4, 4), np.int64)
    shown = []
    for t in range(60):
        votes.add(t, ids, seg, np.array([[0.9, 0.1]] if t < 10 else [[0.1, 0.9]]))
        shown.append(votes.shown(1))
    assert shown[0] == "person" and shown[-1] == "dog"
    assert sum(a != b for a, b in zip(shown, shown[1:])) == 1


# ----------------------------------------------------------------------------- the tiny model
@pytest.fixture(scope="module")
def img() -> np.ndarray:
    rng = np.random.default_rng(0)
    im = np.zeros((128, 160, 3), np.uint8)
    im[:, :80] = (200, 40, 40)
    im[:, 80:] = (30, 60, 220)
    return np.clip(im + rng.normal(0, 20, im.shape), 0, 255).astype(np.uint8)


def _seg(**naming_kw):
    from diffseg_core import DiffSegSegmenter

    return DiffSegSegmenter(SegmenterConfig(model="tiny-random", size=128, naming=NamingConfig(**naming_kw)))


def test_tiny_model_names_every_segment_and_keeps_the_segments(img):
    plain = _seg().segment(img)[0]
    assert plain.names is None
    named = _seg(vocabulary=("red wall", "blue sky", "dog")).segment([img, img[:, ::-1]])
    for s in named:
        assert s.names is not None and len(s.names.names) == s.num_segments
        assert s.names.scores.shape == (s.num_segments, 3)
        np.testing.assert_allclose(s.names.scores.sum(1), 1, atol=1e-4)
        assert all(n is None or n in ("red wall", "blue sky", "dog") for n in s.names.names)
        assert "names_s" in s.meta["timings"]
    np.testing.assert_array_equal(named[0].labels, plain.labels)  # a second pass: the segments stay


def test_word_maps_match_name_segments_of_the_segmenter(img):
    seg = _seg(vocabulary=("red wall", "blue sky"), min_score=0.0)
    s = seg.segment(img)[0]
    wm = seg.word_maps(img)[0]
    assert wm.shape[0] == 2 and np.isfinite(wm).all()
    expected = name_segments(s.labels, wm, ["red wall", "blue sky"], min_score=0.0)
    assert [expected[k] for k in range(s.num_segments)] == s.names.names


def test_a_long_vocabulary_takes_several_prompts_and_same_pass_refuses_it(img):
    words = [f"thing{i:02d}" for i in range(40)]  # 3 tokens + a separator each on the tiny model
    seg = _seg(vocabulary=tuple(words))
    s = seg.segment(img)[0]
    assert seg._prompts[1].num_prompts == 2 and s.names.scores.shape[1] == 40
    with pytest.raises(InputError, match="same_pass"):
        _seg(vocabulary=tuple(words), same_pass=True).segment(img)


@pytest.mark.parametrize("same_pass", [True, False])
def test_same_pass_is_one_prompted_pass_and_otherwise_the_segments_keep_the_empty_prompt(img, same_pass):
    seg = _seg(vocabulary=("red wall", "blue sky"), same_pass=same_pass)
    m = seg.model
    calls = []
    orig = m.unet.forward

    def spy(*a, **kw):
        calls.append(kw["encoder_hidden_states"].clone())
        return orig(*a, **kw)

    m.unet.forward = spy
    try:
        s = seg.segment(img)[0]
    finally:
        del m.unet.forward
    assert s.names is not None and len(s.names.names) == s.num_segments
    empty = m.empty_embedding[0]
    if same_pass:
        assert len(calls) == 1 and not torch.equal(calls[0][0], empty)
    else:
        assert len(calls) == 2 and torch.equal(calls[0][0], empty) and not torch.equal(calls[1][0], empty)
