"""Names for segments from cross-attention: open-vocabulary labelling (DiffSeg's semantic mode).

The vocabulary is the prompt of a UNet pass (`plan_prompts` lays the words out, ``w1, w2,
...``, in as many 77-token prompts as it takes); the cross-attention of every prompt token
is captured in that pass (`diffseg_core.capture`) and aggregated over resolutions to one
map per token (`diffseg_core.aggregate.aggregate_cross`); `word_maps` pools a word's tokens
into one map per word. Then, for a label map of segments:

1. each word map is normalised over space (it sums to 1: *where* the word looks; the
   original normalises by the L2 norm), so that words that draw more attention overall do
   not win everywhere;
2. per pixel, the words' shares ``p(w | x)`` are the normalised maps divided by their sum
   over words (bilinear resize of the maps to the labels, row block by row block);
3. a segment's score for word ``w``: ``mean`` voting, the mean of ``p(w | x)`` over its
   pixels; ``majority`` voting, the fraction of its pixels where ``w`` has the largest share.
   Either way the scores of a segment sum to 1 over the vocabulary;
4. the segment takes the best word when it leads: its *score* is its share minus the
   runner-up's (0: a tie, 1: all the evidence on one word; with one word, its share), and a
   score below ``min_score`` gives no name (None, shown as "unknown"). A lead, not a share,
   so that the rule means the same for 2 words and for 100 (a uniform vote is a tie).

`NameVotes` keeps the names of tracks and 3D labels stable: each frame (slice) adds the
area-weighted scores of the segments under a track, the track's name is the word with the
largest total, and the name shown in an overlay changes only when another word's total
leads by a margin (it never flickers frame to frame).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .errors import InputError, look_up_option
from .io import label_areas

__all__ = ["VOTING", "parse_vocabulary", "read_vocabulary", "nouns_of_caption", "PromptPlan", "plan_prompts",
           "word_maps", "word_scores", "pick_names", "name_segments", "NameVotes"]

VOTING = ("mean", "majority")
#: Rows of the label map handled at once when scoring (bounds memory on huge images).
SCORE_ROWS = 256


# ----------------------------------------------------------------------------- vocabulary
def parse_vocabulary(words: "str | Iterable[str]") -> tuple[str, ...]:
    """The vocabulary as a tuple of words: from ``"person, dog, grass"`` (commas or new lines)
    or a list; blanks stripped, duplicates (case-insensitive) dropped, order kept.

    Raises:
        InputError: no word left.
    """
    items = re.split(r"[,\n]", words) if isinstance(words, str) else [str(w) for w in words]
    out: list[str] = []
    seen: set[str] = set()
    for w in items:
        w = " ".join(w.split())
        if w and w.lower() not in seen:
            seen.add(w.lower())
            out.append(w)
    if not out:
        raise InputError("the vocabulary is empty: give at least one word (e.g. --vocab 'person,dog,grass')")
    return tuple(out)


def read_vocabulary(path: "str | Path") -> tuple[str, ...]:
    """Words of a vocabulary file: one per line (or comma-separated); ``#`` starts a comment."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read the vocabulary file ({exc})") from exc
    return parse_vocabulary("\n".join(line.split("#", 1)[0] for line in text.splitlines()))


#: Words of a caption that are never objects: articles, numbers, prepositions, conjunctions,
#: pronouns and common verbs of captions ("a man is riding a horse on the beach").
_FUNCTION_WORDS = frozenset("""
a an the this that these those some several many few two three four five one its their his her
of on in at to into onto over under near by with without from for behind beside next top front
and or but while as is are was were be being been has have had it there here up down out off
""".split())


def nouns_of_caption(caption: str) -> tuple[str, ...]:
    """The object words of a caption, by a rule (no tagger is downloaded): words between
    function words (articles, prepositions, conjunctions, auxiliaries), minus verbs in
    ``-ing``; each run of words gives its last word (``"a black dog"`` -> ``dog``).

    Example:
        >>> nouns_of_caption("a man riding a horse on the beach")
        ('man', 'horse', 'beach')
    """
    words = re.findall(r"[a-z]+", caption.lower())
    out: list[str] = []
    run: list[str] = []
    for w in words + ["."]:
        if w in _FUNCTION_WORDS or w == "." or (w.endswith("ing") and len(w) > 4):
            if run:
                out.append(run[-1])
            run = []
        else:
            run.append(w)
    return parse_vocabulary(out) if out else ()


# ----------------------------------------------------------------------------- prompts
@dataclass(frozen=True)
class PromptPlan:
    """A vocabulary laid out in prompts of at most ``max_length`` tokens.

    Attributes:
        words: the vocabulary.
        ids: int64 ``(P, max_length)`` token ids of the ``P`` prompts (BOS, words separated
            by the separator, EOS, padding).
        tokens: per word, ``(prompt index, token positions)`` of its tokens.
    """

    words: tuple[str, ...]
    ids: np.ndarray
    tokens: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def num_prompts(self) -> int:
        return int(self.ids.shape[0])


def plan_prompts(words: Sequence[str], tokenize: Callable[[str], list[int]], *, bos: int, eos: int, pad: int,
                 separator: Sequence[int], max_length: int = 77) -> PromptPlan:
    """Lay ``words`` out as ``w1, w2, ...`` prompts (a new prompt when one is full).

    Args:
        tokenize: a word -> its token ids (no special tokens).
        bos, eos, pad: the tokenizer's special ids.
        separator: ids of the separator between words (CLIP: the comma).
        max_length: tokens per prompt, special ones included (77 for SD).
    """
    room = int(max_length) - 2
    prompts: list[list[int]] = [[]]
    where: list[tuple[int, tuple[int, ...]]] = []
    for w in words:
        ids = list(tokenize(w))
        if not ids:
            raise InputError(f"vocabulary word {w!r} has no tokens")
        if len(ids) > room:
            raise InputError(f"vocabulary word {w!r} is {len(ids)} tokens long; at most {room} fit in a prompt")
        cur = prompts[-1]
        need = len(ids) + (len(separator) if cur else 0)
        if len(cur) + need > room:
            prompts.append([])
            cur = prompts[-1]
        if cur:
            cur.extend(separator)
        start = 1 + len(cur)  # after BOS
        cur.extend(ids)
        where.append((len(prompts) - 1, tuple(range(start, start + len(ids)))))
    arr = np.full((len(prompts), int(max_length)), int(pad), np.int64)
    for i, p in enumerate(prompts):
        arr[i, 0] = bos
        arr[i, 1:1 + len(p)] = p
        arr[i, 1 + len(p)] = eos
    return PromptPlan(words=tuple(words), ids=arr, tokens=tuple(where))


def word_maps(token_maps: np.ndarray, plan: PromptPlan) -> np.ndarray:
    """float32 ``(V, h, w)``: per word, the mean of its tokens' maps.

    Args:
        token_maps: float ``(P, L, h, w)``: per prompt of ``plan``, the aggregated
            cross-attention of each of its ``L`` tokens.
    """
    tm = np.asarray(token_maps)
    if tm.ndim != 4 or tm.shape[0] != plan.num_prompts or tm.shape[1] != plan.ids.shape[1]:
        raise ValueError(f"token_maps must be ({plan.num_prompts}, {plan.ids.shape[1]}, h, w); got {tm.shape}")
    return np.stack([tm[p, list(pos)].mean(0) for p, pos in plan.tokens]).astype(np.float32)


# ----------------------------------------------------------------------------- scoring
def _row_weights(n_out: int, n_in: int, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear (half-pixel centres, edges clamped) source rows and weights of rows r0..r1."""
    y = (np.arange(r0, r1, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    y = np.clip(y, 0, n_in - 1)
    y0 = np.floor(y).astype(np.intp)
    y1 = np.minimum(y0 + 1, n_in - 1)
    return y0, y1, (y - y0).astype(np.float32)


def word_scores(labels: np.ndarray, token_maps: np.ndarray, voting: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment of ``labels``, its score for every word of ``token_maps``.

    Args:
        labels: int ``(H, W)`` segment ids; negative values are no segment.
        token_maps: float ``(V, h, w)``, one non-negative map per word, any resolution
            (bilinearly resized to the labels).
        voting: ``"mean"`` or ``"majority"`` (see the module docstring).

    Returns:
        ``(ids, scores, areas)``: the segment ids present (sorted), float32 ``(K, V)`` scores
        (rows sum to 1, or 0 where no pixel of the segment has attention), int64 areas.
    """
    look_up_option(voting, VOTING, "voting")
    lab = np.asarray(labels)
    tm = np.asarray(token_maps, dtype=np.float32)
    if lab.ndim != 2:
        raise InputError(f"labels must be (H, W); got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise InputError(f"labels must be integers; got {lab.dtype}")
    if tm.ndim != 3 or tm.shape[0] < 1:
        raise InputError(f"token_maps must be (V, h, w) with V >= 1; got shape {tm.shape}")
    if not np.isfinite(tm).all() or (tm < 0).any():
        raise InputError("token_maps must be finite and non-negative")
    V, h, w = tm.shape
    H, W = lab.shape
    tot = tm.reshape(V, -1).sum(1)
    tm = tm / np.where(tot > 0, tot, 1)[:, None, None]  # each word's map sums to 1 over space
    # columns first (small: V x h x W), then rows block by block
    x0, x1, wx = _row_weights(W, w, 0, W)
    cols = tm[:, :, x0] * (1 - wx) + tm[:, :, x1] * wx  # (V, h, W)
    ids, areas = label_areas(lab)  # row blocks: no sorted copy of a huge label map
    K = len(ids)
    acc = np.zeros((K, V), np.float64)
    lut_size = int(ids.max()) + 1 if K else 0
    lut = np.full(lut_size, -1, np.int64)
    lut[ids] = np.arange(K)
    for r0 in range(0, H, SCORE_ROWS):
        r1 = min(H, r0 + SCORE_ROWS)
        y0, y1, wy = _row_weights(H, h, r0, r1)
        block = cols[:, y0] * (1 - wy)[None, :, None] + cols[:, y1] * wy[None, :, None]  # (V, rows, W)
        seg = lab[r0:r1].reshape(-1)
        keep = seg >= 0
        idx = lut[seg[keep]]
        flat = block.reshape(V, -1)[:, keep]
        s = flat.sum(0)
        ok = s > 0
        if voting == "mean":  # one bincount over (segment, word) pairs
            share = flat[:, ok] / s[ok]
            pairs = (idx[ok][None, :] * V + np.arange(V)[:, None]).ravel()
            acc += np.bincount(pairs, weights=share.ravel(), minlength=K * V).reshape(K, V)
        else:
            win = flat[:, ok].argmax(0)
            acc += np.bincount(idx[ok] * V + win, minlength=K * V).reshape(K, V)
    areas_f = np.maximum(areas, 1)[:, None]
    return ids.astype(np.int64), (acc / areas_f).astype(np.float32), areas


def pick_names(scores: np.ndarray, vocabulary: Sequence[str], min_score: float) -> list[tuple["str | None", float]]:
    """Per row of ``scores`` ``(K, V)`` (shares): ``(best word or None, its lead)``, the lead
    being its share minus the runner-up's; None when the lead is below ``min_score`` or the
    row has no evidence."""
    sc = np.asarray(scores, dtype=np.float64)
    if sc.ndim != 2 or sc.shape[1] != len(vocabulary) or not len(vocabulary):
        raise ValueError(f"scores must be (K, {len(vocabulary)}) with a vocabulary; got {sc.shape}")
    top = np.sort(sc, axis=1)[:, ::-1]
    lead = top[:, 0] - (top[:, 1] if sc.shape[1] > 1 else 0.0)
    best = sc.argmax(1)
    return [(vocabulary[int(j)] if top[k, 0] > 0 and lead[k] >= min_score else None, float(lead[k]))
            for k, j in enumerate(best)]


def name_segments(labels: np.ndarray, token_maps: np.ndarray, vocabulary: Sequence[str], voting: str = "mean",
                  min_score: float = 0.1) -> dict[int, "str | None"]:
    """Name every segment of ``labels`` with a word of ``vocabulary`` (or None).

    Works with cross-attention from any model, like `segment_from_attention`.

    Args:
        labels: int ``(H, W)`` segment ids (negative: no segment).
        token_maps: float ``(V, h, w)``, one map per vocabulary entry (any resolution).
        vocabulary: the ``V`` words, in the order of ``token_maps``.
        voting: ``"mean"`` (mean share of each word over the segment's pixels) or
            ``"majority"`` (share of the segment's pixels where the word leads).
        min_score: a segment is named only if its best word's share leads the runner-up's
            by at least this much (0.1: ten points of the evidence); below, None.

    Returns:
        ``{segment_id: name or None}`` for every id present in ``labels``.

    Example:
        >>> lab = np.zeros((4, 4), np.int32); lab[:, 2:] = 1
        >>> maps = np.stack([(lab == 0), (lab == 1)]).astype(np.float32)
        >>> name_segments(lab, maps, ["sky", "sea"])
        {0: 'sky', 1: 'sea'}
    """
    vocab = tuple(vocabulary)
    tm = np.asarray(token_maps)
    if tm.ndim != 3 or tm.shape[0] != len(vocab):
        raise InputError(f"token_maps must be ({len(vocab)}, h, w), one map per vocabulary word; got shape {tm.shape}")
    if not 0.0 <= float(min_score) <= 1.0:
        raise InputError(f"min_score must be in [0, 1]; got {min_score}")
    ids, scores, _ = word_scores(labels, tm, voting)
    return {int(i): n for i, (n, _s) in zip(ids, pick_names(scores, vocab, float(min_score)))}


# ----------------------------------------------------------------------------- votes in time / depth
@dataclass
class NameVotes:
    """Area-weighted votes for the names of tracks (frames) or 3D labels (slices).

    Attributes:
        vocabulary: the words.
        min_score: a track is named only if its best word's share of the area-weighted votes
            leads the runner-up's by at least this much (as `name_segments`).
        switch_margin: the name shown for a track (`shown`) changes only when another word's
            total leads the shown one's by this share of the track's votes, so that a name
            never flickers frame to frame.
    """

    vocabulary: tuple[str, ...]
    min_score: float = 0.1
    switch_margin: float = 0.1
    totals: dict[int, np.ndarray] = field(default_factory=dict)
    areas: dict[int, int] = field(default_factory=dict)
    history: dict[int, list[list]] = field(default_factory=dict)
    _shown: dict[int, "int | None"] = field(default_factory=dict)

    def add(self, index: int, ids: np.ndarray, segments: np.ndarray, scores: np.ndarray) -> None:
        """Add one frame's (slice's) evidence.

        Args:
            index: the frame (slice) number, kept in each track's history.
            ids: int ``(H, W)`` track ids (0 and negative: none).
            segments: int ``(H, W)`` segment index ``0..K-1`` of the same frame (-1: none).
            scores: float ``(K, V)`` segment scores (`word_scores`).
        """
        ids = np.asarray(ids)
        seg = np.asarray(segments)
        sc = np.asarray(scores, dtype=np.float64)
        if ids.shape != seg.shape:
            raise ValueError(f"ids {ids.shape} and segments {seg.shape} must have one shape")
        K, V = sc.shape
        if V != len(self.vocabulary):
            raise ValueError(f"scores have {V} words; the vocabulary has {len(self.vocabulary)}")
        keep = (ids > 0) & (seg >= 0) & (seg < K)
        if not keep.any():
            return
        tracks, t_idx = np.unique(ids[keep], return_inverse=True)
        overlap = np.bincount(t_idx * K + seg[keep].astype(np.int64), minlength=len(tracks) * K)
        overlap = overlap.reshape(len(tracks), K).astype(np.float64)
        votes = overlap @ sc  # (T, V): pixels of each track times the scores of their segments
        area = overlap.sum(1)
        for t, v, a in zip(tracks.tolist(), votes, area):
            self.totals[t] = self.totals.get(t, 0) + v
            self.areas[t] = self.areas.get(t, 0) + int(a)
            name, lead = pick_names((v / max(a, 1))[None], self.vocabulary, self.min_score)[0]
            self.history.setdefault(t, []).append([int(index), name, round(lead, 4)])
            self._update_shown(t)

    def relabel(self, mapping: dict[int, int]) -> None:
        """Fold tracks into others (late id corrections, consecutive relabelling):
        ``{old: new}``; the votes of ``old`` join ``new``'s."""
        for old, new in mapping.items():
            if old == new or old not in self.totals:
                continue
            self.totals[new] = self.totals.get(new, 0) + self.totals.pop(old)
            self.areas[new] = self.areas.get(new, 0) + self.areas.pop(old)
            self.history[new] = sorted(self.history.get(new, []) + self.history.pop(old, []), key=lambda r: r[0])
            self._shown.pop(old, None)
            self._update_shown(new)

    def _update_shown(self, t: int) -> None:
        tot, a = self.totals[t], max(1, self.areas[t])
        best = int(tot.argmax())
        cur = self._shown.get(t)
        if cur is None:
            name, _ = pick_names((tot / a)[None], self.vocabulary, self.min_score)[0]
            self._shown[t] = None if name is None else best
        elif best != cur and (tot[best] - tot[cur]) / a > self.switch_margin:
            self._shown[t] = best

    def name(self, t: int) -> tuple["str | None", float]:
        """The track's name from all its votes (None below ``min_score``) and its score (the
        lead of its share over the runner-up's)."""
        if t not in self.totals:
            return None, 0.0
        return pick_names((self.totals[t] / max(1, self.areas[t]))[None], self.vocabulary, self.min_score)[0]

    def shown(self, t: int) -> "str | None":
        """The name to draw for the track now (sticky: see ``switch_margin``)."""
        j = self._shown.get(t)
        return None if j is None else self.vocabulary[j]

    def record(self, t: int) -> dict:
        """What a sidecar keeps of a track: name, score and the per-frame votes
        ``[index, name, score]``."""
        name, score = self.name(t)
        return {"name": name, "name_score": round(score, 4), "name_votes": self.history.get(t, [])}
