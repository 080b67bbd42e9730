"""Stage 1, predict: carry the previous frame's track ids into the new frame.

The backward optical flow (new -> previous) pulls every previous track id to the pixel it
moved to. The colour check drops the pixels whose colour is not the one the flow brings
from the previous frame (occluded or uncovered, an object gone or appeared in place, a
flow that fell behind a small or fast object), and those the flow brings from outside the
previous frame, so they predict nothing. When the cheap flow loses a track (most of its
pixels fail the check: fast motion, blur) the pair is recomputed with a careful preset,
and a track the flow still loses moves rigidly at its last measured velocity
(constant-velocity motion model) into the pixels no confirmed prediction claims.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

import numpy as np

from ..flow import colour_check, label_displacements, make_flow_estimator, sources, translate_labels, warp_labels
from .config import PredictConfig

# a track counts as lost by the flow when less than this fraction of it survives the
# colour check; tracks smaller than LOST_MIN_AREA work pixels never count (specks
# fail the check whatever the flow). Fixed: ablation in benchmarks/RESULTS.md.
LOST_FRACTION = 0.7
LOST_MIN_AREA = 64


@dataclass
class Prediction:
    """Where the previous tracks are expected in the new frame (work resolution).

    Attributes:
        labels: int32 ``(h, w)`` predicted track id per pixel (0 = no prediction).
        flow: float32 ``(h, w, 2)`` backward flow new -> previous, or None (in place).
        velocity: ``{track id: (dy, dx)}`` measured this frame (work pixels per frame): a
            `Motion`, which measures a track when asked.
        area: int64 predicted pixels per id (index 0 not counted), or None (not measured):
            spares the evidence stage another pass over the map.
        valid: bool ``(h, w)`` pixels whose flow passed the colour check, or None (no
            check): the lost tracks' motion-model fill is not among them.
    """

    labels: np.ndarray
    flow: Optional[np.ndarray]
    velocity: Mapping
    area: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None


class Predictor:
    """Flow estimators of one stream (stateless between frames; the state is passed in)."""

    def __init__(self, cfg: PredictConfig) -> None:
        self.cfg = cfg
        self.flow = None if cfg.flow == "none" else make_flow_estimator(cfg.flow, cfg.dis_preset)
        fb = cfg.fallback_preset
        self.fallback = (make_flow_estimator("dis", fb) if self.flow is not None and cfg.colour_tolerance > 0
                         and fb != "none" and not (cfg.flow == "dis" and fb == cfg.dis_preset) else None)

    def _pair(self, est, prev: np.ndarray, prev_gray: np.ndarray, gray: np.ndarray, prev_rgb: "np.ndarray | None",
              rgb: "np.ndarray | None") -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """``(backward flow, the ids prev warped along it, the colour check or None)``."""
        bwd = est(gray, prev_gray)
        if self.cfg.colour_tolerance <= 0:
            return bwd, warp_labels(prev, bwd), None
        if prev_rgb is None or rgb is None:  # grey frames only: the check in grey levels
            prev_rgb, rgb = prev_gray, gray
        src = sources(bwd)
        valid = colour_check(prev_rgb, rgb, bwd, self.cfg.colour_tolerance, src=src)
        return bwd, warp_labels(prev, bwd, valid, src=src), valid  # unvouched pixels predict nothing (0)

    def __call__(self, prev: np.ndarray, prev_gray: "np.ndarray | None", gray: "np.ndarray | None",
                 velocity: "dict | None" = None, prev_rgb: "np.ndarray | None" = None,
                 rgb: "np.ndarray | None" = None, prev_area: "np.ndarray | None" = None) -> Prediction:
        """Predict the previous ids ``prev`` (int32 ``(h, w)``) in the frame ``gray``.

        Args:
            prev: int32 ``(h, w)`` track ids of the previous frame (0 = none).
            prev_gray, gray: uint8 ``(h, w)`` previous and new frame, or None (in place).
            velocity: ``{track id: (dy, dx)}`` last known velocities (motion model): read
                with ``get`` for the tracks the flow loses.
            prev_rgb, rgb: uint8 ``(h, w, 3)`` the same frames in colour (the colour
                check), or None (the check on the grey frames).
            prev_area: ``np.bincount(prev.ravel())`` when known, or None (counted here).
        """
        if self.flow is None or prev_gray is None or gray is None:
            return Prediction(prev, None, {})
        bwd, pred, valid = self._pair(self.flow, prev, prev_gray, gray, prev_rgb, rgb)
        if valid is None:
            return Prediction(pred, bwd, {})
        before = np.bincount(prev.ravel()) if prev_area is None else prev_area
        n = len(before)
        count = _count(pred, n)
        lost = _lost(before, count)
        if self.fallback is not None and lost.any():
            bwd, pred, valid = self._pair(self.fallback, prev, prev_gray, gray, prev_rgb, rgb)
            count = _count(pred, n)
            lost = _lost(before, count)
        area = count
        motion = Motion(pred, bwd, (count >= 8) & (count >= 0.1 * before))
        if lost.any() and velocity:
            shifts = np.zeros((n, 2), np.float32)
            gone = np.flatnonzero(lost)
            motion.measure(gone)
            for t in gone.tolist():
                v = motion[t] if t in motion else velocity.get(t)
                if v is not None:
                    shifts[t] = v
            moved = translate_labels(np.where(lost[prev], prev, 0), np.rint(shifts).astype(np.int64))
            pred = np.where((pred == 0) & (moved > 0), moved, pred)
            area = None
        return Prediction(pred.astype(np.int32, copy=False), bwd, motion, area, valid)


class Motion(Mapping):
    """The displacement of every firm track (8 pixels and a tenth of its previous area
    vouched for by the colour check) in one prediction: the median of its pixels' flow
    (`temporal.flow.label_displacements`), measured only for the tracks it is asked about.
    A track's velocity matters once the flow loses it or it leaves the frame, which most
    tracks in most frames never do; measuring all of them every frame was a ninth of the
    engine's time.

    Read like the dict ``{track id: (dy, dx)}`` of the firm tracks.
    """

    def __init__(self, labels: np.ndarray, flow: np.ndarray, firm: np.ndarray) -> None:
        self._labels, self._flow = labels, flow
        self._firm = firm.copy()
        self._firm[0] = False
        self._known: dict[int, tuple[float, float]] = {}

    def __contains__(self, tid: object) -> bool:
        return isinstance(tid, (int, np.integer)) and 0 <= int(tid) < len(self._firm) and bool(self._firm[int(tid)])

    def __iter__(self) -> Iterator[int]:
        return iter(np.flatnonzero(self._firm).tolist())

    def __len__(self) -> int:
        return int(self._firm.sum())

    def __getitem__(self, tid: int) -> tuple[float, float]:
        if tid not in self:
            raise KeyError(tid)
        tid = int(tid)
        if tid not in self._known:
            self.measure([tid])
        return self._known[tid]

    def measure(self, ids: "Iterable[int]") -> None:
        """Measure the firm ones of ``ids`` not measured yet, in one pass over the map."""
        todo = np.array(sorted({int(t) for t in ids if t in self and int(t) not in self._known}), np.int64)
        if not len(todo):
            return
        lut = np.zeros(len(self._firm), np.int64)
        lut[todo] = np.arange(1, len(todo) + 1)
        row = np.take(lut, self._labels.ravel())
        sel = np.flatnonzero(row)
        disp, _ = label_displacements(row[sel][None, :], self._flow.reshape(-1, 2)[sel][None], len(todo) + 1)
        for k, t in enumerate(todo.tolist(), 1):
            self._known[t] = (float(disp[k, 0]), float(disp[k, 1]))


def _count(pred: np.ndarray, n: int) -> np.ndarray:
    """int64 ``(n,)`` predicted pixels per previous id (0 not counted)."""
    count = np.bincount(pred.ravel(), minlength=n)[:n]
    count[0] = 0
    return count


def _lost(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """bool per previous id (pixels before and after the flow): big enough to matter and
    mostly lost by the flow."""
    lost = (before >= LOST_MIN_AREA) & (after < LOST_FRACTION * before)
    lost[0] = False
    return lost


def shift_maps(maps: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Move distributions rigidly (the constant-velocity prediction of tracks out of sight).

    Args:
        maps: float32 ``(T, h, w)`` distributions.
        shifts: float ``(T, 2)`` ``(dy, dx)`` in grid cells.

    Returns:
        float32 ``(T, h, w)``: shifted (bilinear, edge values repeated: what
        ``scipy.ndimage.shift(order=1, mode="nearest")`` gives), each renormalised to sum
        to 1; all maps in four gathers.
    """
    T, h, w = maps.shape
    d = np.asarray(shifts, np.float64)
    sy = np.arange(h)[None, :] - d[:, :1]  # (T, h) source rows
    sx = np.arange(w)[None, :] - d[:, 1:]  # (T, w) source columns
    y0, x0 = np.floor(sy), np.floor(sx)
    wy, wx = (sy - y0)[:, :, None], (sx - x0)[:, None, :]
    ya, yb = np.clip(y0, 0, h - 1).astype(np.int64), np.clip(y0 + 1, 0, h - 1).astype(np.int64)
    xa, xb = np.clip(x0, 0, w - 1).astype(np.int64), np.clip(x0 + 1, 0, w - 1).astype(np.int64)
    t = np.arange(T)[:, None, None]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return maps[t, r[:, :, None], c[:, None, :]]
    out = ((1 - wy) * ((1 - wx) * at(ya, xa) + wx * at(ya, xb)) + wy * ((1 - wx) * at(yb, xa) + wx * at(yb, xb)))
    out /= np.maximum(out.reshape(T, -1).sum(1), 1e-12)[:, None, None]
    return out.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """float32 ``(n, n)`` 1-D Gaussian smoothing with edge values repeated (``B @ x``)."""
    r = int(np.ceil(4 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    B = np.zeros((n, n))
    for i in range(n):
        np.add.at(B[i], np.clip(np.arange(i - r, i + r + 1), 0, n - 1), k)
    return B.astype(np.float32)


def blurred(a: np.ndarray, b: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Both sets of distributions ``(n, h, w)`` smoothed by a Gaussian of ``sigma`` grid
    cells and renormalised: compared so, a position known to within ``sigma`` costs
    nothing (used for tracks out of sight, whose position is a guess). Two matrix products
    per set (the separable Gaussian as ``(h, h)`` and ``(w, w)`` matrices)."""
    def smooth(m: np.ndarray) -> np.ndarray:
        h, w = m.shape[1:]
        out = _gauss_matrix(h, float(sigma)) @ np.asarray(m, np.float32) @ _gauss_matrix(w, float(sigma)).T
        return out / np.maximum(out.reshape(len(out), -1).sum(1), 1e-12)[:, None, None]
    return smooth(a), smooth(b)
