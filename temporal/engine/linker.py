"""`Linker`: the four stages run on one frame (or slice) at a time, with bounded state.

Driven by `temporal.tracker.VideoSegmenter` (frames, the `video` preset) and by
`volume.api.link_volume` (slices, the `slices` preset). Everything here is at work
resolution; the driver resizes.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from scipy.optimize import linear_sum_assignment

from ..matching import color_cells
from ..tracks import TrackRegistry, settle_velocities
from .associate import Association, associate
from .config import EngineConfig
from .evidence import Evidence, PartColours, gather, look_similarity, part_colours
from .lifecycle import folds
from .predict import Prediction, Predictor, blurred, shift_maps


@dataclass
class LinkState:
    """What the engine carries from one frame to the next (bounded: one label map, the
    frame in grey and in colour at work resolution, one look per remembered track)."""

    registry: TrackRegistry
    prev: Optional[np.ndarray] = None
    prev_gray: Optional[np.ndarray] = None
    prev_small: Optional[np.ndarray] = None
    prev_area: Optional[np.ndarray] = None  # np.bincount(prev.ravel()) when known (None: counted when needed)


@dataclass
class LinkResult:
    """One linked frame at work resolution.

    Attributes:
        labels: int32 ``(h, w)`` track ids (0 = none).
        segment_ids: int64 ``(K,)`` id of each segment kept whole (0 = carved or no id).
        carved: bool ``(K,)`` segments cut between several ids.
        absorbed: ``{young id: older id}`` folded in this frame.
        ids: int64 sorted ids present.
    """

    labels: np.ndarray
    segment_ids: np.ndarray
    carved: np.ndarray
    absorbed: dict
    ids: np.ndarray


class Linker:
    """The linking engine of one stream (see the package docstring).

    Args:
        config: `EngineConfig` (`temporal.engine.config.video` / `slices` presets).
    """

    def __init__(self, config: EngineConfig) -> None:
        self.cfg = config
        self.predictor = Predictor(config.predict)

    def init_state(self, id_offset: int = 0) -> LinkState:
        return LinkState(TrackRegistry(self.cfg.lifecycle.memory, id_offset))

    def predict(self, state: LinkState, gray: "np.ndarray | None", commit: bool = True,
                small: "np.ndarray | None" = None) -> Prediction:
        """Stage 1 (also used alone to propagate labels between keyframes; ``small``: the
        frame in colour at work resolution, for the colour check). With ``commit`` every
        measured velocity is remembered; `step` remembers only those of the tracks the frame
        shows (the flow of an occluded track measures its occluder)."""
        reg = state.registry
        p = self.predictor(state.prev, state.prev_gray, gray, _Velocities(reg), state.prev_small, small,
                           state.prev_area)
        if commit:
            self._remember_velocity(reg, p.velocity, p.velocity)
        return p

    def predict_commit(self, state: LinkState, p: Prediction) -> None:
        """Remember the velocities of a `predict` made with ``commit=False`` (kept after all)."""
        self._remember_velocity(state.registry, p.velocity, p.velocity)

    @staticmethod
    def _remember_velocity(reg: TrackRegistry, velocity: Mapping, present: "Iterable[int]") -> None:
        for tid in present:
            if tid in reg and tid in velocity:
                reg[tid].measured_by(velocity)
        # the velocities still pending on an earlier frame are measured now: the state
        # holds at most this frame's flow
        settle_velocities(reg.tracks.values(), keep=velocity)

    def step(self, state: LinkState, seg: np.ndarray, K: int, props: "np.ndarray | None",
             small: "np.ndarray | None", gray: "np.ndarray | None", idx: int) -> LinkResult:
        """Link one frame.

        Args:
            seg: int32 ``(h, w)`` segment index ``0..K-1`` (-1 = no segment).
            K: number of segments.
            props: float32 ``(K, ph, pw)`` proposal maps (distributions), or None.
            small: uint8 ``(h, w, 3)`` the frame (colour looks), or None.
            gray: uint8 ``(h, w)`` the frame for the flow, or None.
            idx: frame (slice) index.
        """
        reg = state.registry
        pred = (self.predict(state, gray, commit=False, small=small) if state.prev is not None
                else Prediction(np.zeros_like(seg), None, {}))
        bins = self.cfg.evidence.hist_bins if small is not None else 0
        cells = color_cells(small, bins) if bins else None  # each pixel's colour cell, once a frame
        props = props if props is not None and len(props) == K and K > 0 else None
        track_look = self._looks_of(reg, props, bins)
        # evidence: the (track, segment) table, and the remembered tracks that compete for segments
        ev = gather(pred.labels, seg, K, pred.area)
        parts = None  # the parts' colours: one pass over the pixels for every histogram of the frame
        if bins and K:
            parts = part_colours(cells, ev, bins, track_look(ev.track_ids)[1] if len(ev.track_ids) else None)
            if parts.track_root is not None:
                ev.colours = parts
                ev.look = parts.own(K)
        remembered, reid = self._candidates_back(reg, ev, track_look, props, parts, K)
        # associate: one decision for the frame
        asg = associate(ev, self.cfg.associate, reid, self._carvable(reg, ev))
        # lifecycle: births, folds of young pieces, returns
        part_ids = self._births(reg, ev, asg, remembered if reid is not None else np.zeros(0, np.int64), idx)
        part_ids, absorbed = self._corrections(reg, part_ids, ev, asg.whole == -2, remembered, track_look,
                                               parts, idx, seg.shape[0])
        segment_ids, carved = _whole_segments(ev, part_ids)
        labels = self._labels(ev, part_ids)
        ids = np.unique(part_ids[part_ids > 0])
        self._remember_velocity(reg, pred.velocity, ids.tolist())
        self._update(state, labels, ids, segment_ids, part_ids, props, ev, parts, gray, small, idx)
        return LinkResult(labels, segment_ids, carved, absorbed, ids)

    @staticmethod
    def _looks_of(reg: TrackRegistry, props: "np.ndarray | None", bins: int):
        """``ids -> (remembered proposal maps, colour histograms)`` of tracks (each None when
        one of them lacks it)."""
        def track_look(ids: np.ndarray) -> "tuple[np.ndarray | None, np.ndarray | None]":
            tr = [reg[i] for i in ids]
            maps = (np.stack([t.proposal for t in tr]) if props is not None and tr and all(
                t.proposal is not None and t.proposal.shape == props.shape[1:] for t in tr) else None)
            hists = np.stack([t.hist for t in tr]) if bins and tr and all(t.hist is not None for t in tr) else None
            return maps, hists
        return track_look

    def _candidates_back(self, reg: TrackRegistry, ev: Evidence, track_look, props: "np.ndarray | None",
                         parts: "PartColours | None", K: int) -> "tuple[np.ndarray, np.ndarray | None]":
        """Remembered tracks (absent from the prediction) and their re-identification scores
        with the segments (look similarity minus ``reid_threshold``; None: no candidate): they
        compete in the same decision, a segment takes one back by look."""
        predicted = set(ev.track_ids.tolist())
        remembered = np.array([t for t in reg.lost_ids() if t not in predicted], np.int64)
        if not (len(remembered) and K):
            return remembered, None
        seg_hists = None if parts is None else parts.histograms(parts.segment, K)
        sim = self._recall(reg, remembered, track_look, props, seg_hists, ev.part.shape[0])
        return remembered, (None if sim is None else sim - self.cfg.lifecycle.reid_threshold)

    def _carvable(self, reg: TrackRegistry, ev: Evidence) -> np.ndarray:
        """bool per predicted track: may still be carved out of segments. A track the
        segmenter has not shown as a segment of its own for ``memory`` frames (it lived only by
        being carved out of others) is not carved any more: without this the stuff tracks of a
        segmenter that re-tiles the ground every frame lived on as carved slivers forever (148
        ids in 9 segments after 120 frames, each frame slower)."""
        return np.array([reg[t].carved < self.cfg.lifecycle.memory for t in ev.track_ids.tolist()], bool)

    @staticmethod
    def _births(reg: TrackRegistry, ev: Evidence, asg: Association, remembered: np.ndarray, idx: int) -> np.ndarray:
        """int64 ``(K, T + 1)`` track id of every part: the decision's owner, a new id for the
        parts no track continues or takes back (one per segment), 0 for empty parts."""
        row_id = np.concatenate([ev.track_ids, remembered, [0]]).astype(np.int64)
        part_ids = row_id[asg.owner]  # owner -1 -> the trailing 0
        new_seg = np.flatnonzero(((asg.owner < 0) & (ev.inter > 0)).any(1) & (ev.seg_area > 0))
        for j in new_seg.tolist():
            part_ids[j, asg.owner[j] < 0] = reg.new(idx).id
        part_ids[ev.inter == 0] = 0
        return part_ids

    def _corrections(self, reg: TrackRegistry, part_ids: np.ndarray, ev: Evidence, carved: np.ndarray,
                     remembered: np.ndarray, track_look, parts: "PartColours | None", idx: int,
                     work_h: int) -> "tuple[np.ndarray, dict[int, int]]":
        """Late id corrections: young tracks folded into an older look-alike that shares a
        carved segment with them (`temporal.engine.lifecycle.folds`), and young tracks that
        are a remembered one back (`_returns`); ``(part_ids relabelled, {young: older})``."""
        absorbed: dict[int, int] = {}
        if carved.any():
            groups = [np.unique(part_ids[j][part_ids[j] > 0]).tolist() for j in np.flatnonzero(carved)]

            def colour_now(t: int) -> "np.ndarray | None":
                if parts is None:
                    return None
                return parts.histograms(np.where(part_ids.ravel()[parts.code] == t, 0, -1), 1)[0]

            absorbed = folds(groups, reg, idx, self.cfg.lifecycle,
                             lambda y, k: self._fold_likeness(reg, y, k, idx, colour_now))
        absorbed.update(self._returns(reg, np.unique(part_ids[part_ids > 0]), remembered, track_look, idx,
                                      work_h, set(absorbed)))
        for y in absorbed:  # a fold into a track that is itself a return: to the returned id
            while absorbed[y] in absorbed:
                absorbed[y] = absorbed[absorbed[y]]
        if absorbed:
            lut = np.arange(max(int(part_ids.max()), max(absorbed)) + 1, dtype=np.int64)
            for y, o in absorbed.items():
                lut[y] = o
            part_ids = lut[part_ids]
            for y in absorbed:
                reg.tracks.pop(y, None)
        return part_ids, absorbed

    def _fold_likeness(self, reg: TrackRegistry, y: int, k: int, idx: int, colour_now) -> float:
        """Look likeness of two tracks that share a segment (proposal KL x colour); a track
        born in this frame has no proposal yet and is judged by the colour of its pixels now
        (``colour_now(id)``); one with no look at all is not folded (0), two old tracks
        without looks are alike (1)."""
        h = [reg[t].hist if reg[t].hist is not None else colour_now(t) for t in (y, k)]
        m = [reg[t].proposal for t in (y, k)]
        hists = None if h[0] is None or h[1] is None else (h[0][None], h[1][None])
        maps = (None if m[0] is None or m[1] is None or m[0].shape != m[1].shape else (m[0][None], m[1][None]))
        if hists is None and maps is None:
            return 0.0 if reg[y].first_frame == idx else 1.0
        sim = look_similarity(*(maps or (None, None)), self.cfg.evidence.kl_tau, *(hists or (None, None)))
        return float(sim[0, 0])

    def _recall(self, reg: TrackRegistry, remembered: np.ndarray, track_look, maps: "np.ndarray | None",
                hists: "np.ndarray | None", work_h: int) -> "np.ndarray | None":
        """float32 ``(Q, R)`` look similarity of queries (segments or young tracks: proposal
        maps ``(Q, ph, pw)`` and / or colour histograms ``(Q, B)``) with remembered tracks,
        or None. A remembered track's map is moved to where it would be now at its last
        velocity and both are blurred by how unsure that is (one grid cell, plus one work
        pixel per frame out of sight, rounded up to a power of two frames)."""
        rmaps, rhists = track_look(remembered)
        tau = self.cfg.evidence.kl_tau
        col = look_similarity(None, None, tau, rhists if hists is not None else None, hists)
        if rmaps is None or maps is None or rmaps.shape[1:] != maps.shape[1:]:
            return col
        # colour bounds the look (look = map likeness x colour <= colour): the maps are
        # compared only for the pairs whose colour could still pass reid_threshold
        need = np.ones((len(maps), len(remembered)), bool) if col is None else col > self.cfg.lifecycle.reid_threshold
        sim = np.zeros(need.shape, np.float32)
        if not need.any():
            return sim
        scale = rmaps.shape[1] / work_h
        gone = np.array([reg[t].missed + 1 for t in remembered.tolist()], np.float32)
        settle_velocities([reg[t] for t in remembered.tolist()])
        moves = np.array([reg[t].velocity for t in remembered.tolist()], np.float32) * (gone * scale)[:, None]
        # the blur grows with the time out of sight, rounded up to a power of two frames
        # (one blur of the queries per level: at most log2(memory) levels)
        gone = 2.0 ** np.ceil(np.log2(gone))
        for g in np.unique(gone[need.any(0)]):
            cols = np.flatnonzero((gone == g) & need.any(0))
            rows = np.flatnonzero(need[:, cols].any(1))
            tm, qm = blurred(shift_maps(rmaps[cols], moves[cols]), maps[rows], 1.0 + g * scale)
            kl = look_similarity(tm, qm, tau)
            sim[np.ix_(rows, cols)] = kl if col is None else kl * col[np.ix_(rows, cols)]
        return sim

    def _returns(self, reg: TrackRegistry, present: np.ndarray, remembered: np.ndarray, track_look, idx: int,
                 work_h: int, taken: set) -> dict[int, int]:
        """Late re-identification: a young track (born at most ``correction_window`` frames
        ago, after the remembered track was last seen) that has come to look like a
        remembered track, where that track would be now, is that track coming back (its
        first view was a sliver that looked unlike it): ``{young id: remembered id}``, one
        to one (Hungarian), by the same look as re-identification, above ``reid_threshold``."""
        lc = self.cfg.lifecycle
        if lc.correction_window <= 0 or not len(remembered):
            return {}
        young = np.array([t for t in present.tolist() if t not in taken and t in reg
                          and 0 < idx - reg[t].first_frame <= lc.correction_window], np.int64)
        if not len(young):
            return {}
        ymaps, yhists = track_look(young)
        sim = self._recall(reg, remembered, track_look, ymaps, yhists, work_h)
        if sim is None:
            return {}
        first = np.array([reg[t].first_frame for t in young.tolist()])[:, None]
        last = np.array([reg[t].last_frame for t in remembered.tolist()])[None, :]
        score = np.where(last < first, sim - lc.reid_threshold, -1.0)
        r, c = linear_sum_assignment(-score)
        return {int(young[i]): int(remembered[j]) for i, j in zip(r, c) if score[i, j] > 0}

    @staticmethod
    def _labels(ev: Evidence, part_ids: np.ndarray) -> np.ndarray:
        """int32 ``(h, w)`` id of every pixel from the id of its part (0 on no segment)."""
        lut = np.concatenate([np.zeros(ev.inter.shape[1], np.int64), part_ids.reshape(-1)]).astype(np.int32)
        return np.take(lut, ev.part)

    def _update(self, state: LinkState, labels: np.ndarray, ids: np.ndarray, segment_ids: np.ndarray,
                part_ids: np.ndarray, props: "np.ndarray | None", ev: Evidence, parts: "PartColours | None",
                gray: "np.ndarray | None", small: "np.ndarray | None", idx: int) -> None:
        """Remember each present track's look, close the frame in the registry and keep the
        frame (labels and their areas, grey, colour) for the next prediction."""
        reg = state.registry
        a = float(self.cfg.evidence.look_update)
        if len(ids):
            if props is not None:
                # the map of the segments a track owns whole (area-weighted); a track holding
                # only carved parts takes those of the segments it was carved from, weighted
                # by its parts. One matrix product for all tracks.
                K = len(props)
                W = np.zeros((K, len(ids)))
                own = np.flatnonzero(segment_ids > 0)
                W[own, np.searchsorted(ids, segment_ids[own])] = ev.seg_area[own]
                has_own = W.sum(0) > 0
                jj, cc = np.nonzero(part_ids > 0)
                tt = np.searchsorted(ids, part_ids[jj, cc])
                keep = ~has_own[tt]
                np.add.at(W, (jj[keep], tt[keep]), ev.inter[jj[keep], cc[keep]])
                tot = W.sum(0)
                valid = np.flatnonzero(tot > 0)
                P = ((W[:, valid] / tot[valid]).T @ props.reshape(K, -1)).astype(np.float32)
                for k, row in zip(valid.tolist(), P):
                    t = reg.tracks.get(int(ids[k]))
                    if t is None:
                        continue
                    p = row.reshape(props.shape[1:])
                    t.proposal = p if t.proposal is None or t.proposal.shape != p.shape else (a * p + (1 - a) * t.proposal)
            if parts is not None:
                # a track's colour is learnt from the segments it owns whole; a track that
                # only holds carved parts learns from those (else carved-in ground would
                # teach an object the ground's colour, and the next carve would find it alike)
                pid = part_ids.ravel()[parts.code]
                owns = np.zeros(int(ids[-1]) + 1, bool)  # per id: owns a whole segment
                owns[segment_ids[segment_ids > 0]] = True
                learn = (pid > 0) & (~owns[pid] | (segment_ids[parts.segment] == pid))
                h = parts.histograms(np.where(learn, np.searchsorted(ids, pid), -1), len(ids))
                for k, tid in enumerate(ids.tolist()):
                    if tid in reg:
                        t = reg[tid]
                        t.hist = h[k] if t.hist is None else (a * h[k] + (1 - a) * t.hist)
        owners = set(segment_ids[segment_ids > 0].tolist())
        for tid in ids.tolist():
            t = reg.tracks.get(tid)
            if t is not None:
                t.carved = 0 if tid in owners else t.carved + 1
        reg.end_frame(idx, ids)
        state.prev, state.prev_area = labels, _areas(ev, part_ids, labels.size)
        state.prev_gray = gray
        state.prev_small = small


class _Velocities(Mapping):
    """The registry's last known velocities, read only for the tracks asked about."""

    def __init__(self, reg: TrackRegistry) -> None:
        self._reg = reg

    def __getitem__(self, tid: int) -> "tuple[float, float]":
        return self._reg.tracks[int(tid)].velocity

    def __iter__(self):
        return iter(self._reg.tracks)

    def __len__(self) -> int:
        return len(self._reg.tracks)


def _areas(ev: Evidence, part_ids: np.ndarray, size: int) -> np.ndarray:
    """int64 pixels per id of the frame's labels (``np.bincount`` of them) from the parts'
    counts: spares the next prediction a pass over the map."""
    area = np.bincount(part_ids.ravel(), weights=ev.inter.ravel(), minlength=1).astype(np.int64)
    area[0] = size - area[1:].sum()
    return area


def _whole_segments(ev: Evidence, part_ids: np.ndarray) -> "tuple[np.ndarray, np.ndarray]":
    """``(segment_ids, carved)``: the id of every segment whose parts all carry one id (0
    otherwise), and which segments are cut between ids."""
    nz = np.where(ev.inter > 0, part_ids, -1)
    mx, mn = nz.max(1), np.where(ev.inter > 0, part_ids, np.iinfo(np.int64).max).min(1)
    single = (mx == mn) & (ev.seg_area > 0)
    return np.where(single, np.maximum(mx, 0), 0), ~single & (ev.seg_area > 0)
