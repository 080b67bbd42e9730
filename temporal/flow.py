"""Dense optical flow (OpenCV DIS / Farneback), forward-backward check, warping.

Flow convention (OpenCV's): ``flow = estimator(a, b)`` is float32 ``(H, W, 2)`` with
``a[y, x] ~= b[y + flow[y, x, 1], x + flow[y, x, 0]]``. To bring the previous frame's
labels into the current frame, estimate ``estimator(cur, prev)`` (the *backward* flow) and
sample the previous labels at ``x + flow(x)``: see `warp_labels`.
"""
from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
from scipy import ndimage

from diffseg_core.errors import look_up_option

FLOW_BACKENDS = ("dis", "farneback")
DIS_PRESETS = ("ultrafast", "fast", "medium")


@runtime_checkable
class FlowEstimator(Protocol):
    """Anything that maps two uint8 grayscale ``(H, W)`` images to float32 ``(H, W, 2)`` flow."""

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


class DISFlow:
    """OpenCV DIS optical flow (Kroeger et al. 2016); fast enough for real time on CPU.

    Args:
        preset: ``"ultrafast"``, ``"fast"`` or ``"medium"``.
    """

    _PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}

    def __init__(self, preset: str = "ultrafast") -> None:
        look_up_option(preset, DIS_PRESETS, "DIS preset")
        self._dis = cv2.DISOpticalFlow_create(self._PRESETS[preset])

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._dis.calc(_gray(a), _gray(b), None)


class FarnebackFlow:
    """OpenCV Farneback polynomial-expansion flow (slower, smoother)."""

    def __init__(self, pyr_scale: float = 0.5, levels: int = 3, winsize: int = 15,
                 iterations: int = 3, poly_n: int = 5, poly_sigma: float = 1.2) -> None:
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, 0)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(_gray(a), _gray(b), None, *self.params)


def make_flow_estimator(backend: str = "dis", dis_preset: str = "ultrafast") -> FlowEstimator:
    """A `FlowEstimator` by name (``"dis"`` or ``"farneback"``)."""
    look_up_option(backend, FLOW_BACKENDS, "flow backend")
    return DISFlow(dis_preset) if backend == "dis" else FarnebackFlow()


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(img, dtype=np.uint8)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinate grids (cached; read-only)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = False
    gy.flags.writeable = False
    return gx, gy


def forward_backward_check(backward: np.ndarray, forward: np.ndarray, abs_tol: float = 1.0,
                           rel_tol: float = 0.05) -> np.ndarray:
    """Pixels of the current frame whose backward flow is confirmed by the forward flow.

    Args:
        backward: float32 ``(H, W, 2)``, flow current -> previous.
        forward: float32 ``(H, W, 2)``, flow previous -> current.
        abs_tol: absolute tolerance in pixels.
        rel_tol: relative tolerance (Sundaram et al.: ``|b + f(x+b)|^2 <
            rel_tol * (|b|^2 + |f(x+b)|^2) + abs_tol^2``).

    Returns:
        bool ``(H, W)``: True = reliable; False = occluded, out of frame or inconsistent.
    """
    h, w = backward.shape[:2]
    gx, gy = _grid(h, w)
    # per-channel contiguous arithmetic, in place (numpy is slow on a trailing axis of 2)
    bx, by = cv2.split(backward)
    mx, my = gx + bx, gy + by
    fx, fy = cv2.split(cv2.remap(forward, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    sx, sy = bx + fx, by + fy
    err = sx * sx
    err += sy * sy
    for c in (bx, by, fx, fy):
        c *= c
    mag = bx
    mag += by
    mag += fx
    mag += fy  # |b|^2 + |f(x+b)|^2
    mag *= rel_tol
    mag += abs_tol * abs_tol
    ok = err <= mag
    ok &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)  # lands inside the previous frame
    return ok


def warp_labels(labels: np.ndarray, flow: np.ndarray, valid: "np.ndarray | None" = None,
                fill: int = 0, border_replicate: bool = False) -> np.ndarray:
    """Bring a previous frame's label map into the current frame (nearest neighbour).

    Args:
        labels: int ``(H, W)`` labels of the previous frame (ids < 2**24).
        flow: float32 ``(H, W, 2)`` backward flow current -> previous.
        valid: optional bool ``(H, W)``; False pixels get ``fill``.
        fill: value for invalid and out-of-frame pixels.
        border_replicate: out-of-frame samples take the nearest border label instead of
            ``fill`` (label propagation, where every pixel needs an id).

    Returns:
        int32 ``(H, W)``.
    """
    h, w = labels.shape
    gx, gy = _grid(h, w)
    src = np.asarray(labels, dtype=np.float32)  # exact for ids < 2**24
    border = cv2.BORDER_REPLICATE if border_replicate else cv2.BORDER_CONSTANT
    out = cv2.remap(src, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_NEAREST,
                    borderMode=border, borderValue=float(fill))
    out = out.astype(np.int32)
    if valid is not None:
        out[~valid] = fill
    return out


def resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize a flow field to ``hw`` = (H, W), scaling the vectors with the grid.

    Args:
        flow: float32 ``(h, w, 2)``.

    Returns:
        float32 ``(H, W, 2)``.
    """
    h, w = flow.shape[:2]
    H, W = hw
    if (h, w) == (H, W):
        return flow
    interp = cv2.INTER_AREA if H < h else cv2.INTER_LINEAR
    out = cv2.resize(flow, (W, H), interpolation=interp)
    out[..., 0] *= W / w
    out[..., 1] *= H / h
    return out


@functools.lru_cache(maxsize=1)
def remap_channel_limit() -> int:
    """The most channels the installed OpenCV's ``cv2.remap`` takes in one call (512 in
    OpenCV 4, 128 in OpenCV 5), found once by trying."""
    grid = np.zeros((1, 1), np.float32)
    for n in (512, 256, 128, 64, 32, 16, 4):
        try:
            cv2.remap(np.zeros((1, 1, n), np.float32), grid, grid, cv2.INTER_LINEAR)
            return n
        except cv2.error:
            continue
    return 1


def warp_maps(maps: np.ndarray, flow: np.ndarray, renormalize: bool = True,
              eps: float = 1e-8) -> np.ndarray:
    """Warp distributions (proposal/attention maps) into the current frame (bilinear).

    Args:
        maps: float32 ``(N, h, w)``, each a distribution over the grid.
        flow: float32 backward flow current -> previous, any resolution (resized to
            ``(h, w)`` with scaled vectors).
        renormalize: make every map sum to 1 again (mass that left the frame is dropped).

    Returns:
        float32 ``(N, h, w)``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    n, h, w = maps.shape
    if n == 0:
        return maps.copy()
    fl = resize_flow(flow, (h, w))
    gx, gy = _grid(h, w)
    mx, my = gx + fl[..., 0], gy + fl[..., 1]
    out = np.empty_like(maps)
    step = remap_channel_limit()
    for s in range(0, n, step):
        chunk = np.ascontiguousarray(maps[s:s + step].transpose(1, 2, 0))
        r = cv2.remap(chunk, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[s:s + step] = r.reshape(h, w, -1).transpose(2, 0, 1)
    if renormalize:
        tot = out.reshape(n, -1).sum(1)
        bad = tot <= eps
        if bad.any():
            out[bad] = maps[bad]
            tot[bad] = maps[bad].reshape(int(bad.sum()), -1).sum(1)
        out /= np.maximum(tot, eps)[:, None, None]
    return out


def label_displacements(labels: np.ndarray, flow: np.ndarray, n: int, res: float = 0.5,
                        max_disp: float = 64.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-label displacement previous -> current: the median of ``-flow`` per label.

    The median is read off per-label histograms of the flow (bins of ``res`` pixels), so the
    cost is two ``bincount`` passes over the map whatever the number of labels.

    Args:
        labels: int ``(H, W)`` labels in the *current* frame (e.g. the previous ids warped
            with the forward-backward mask: 0 = unreliable pixel, ignored).
        flow: float32 ``(H, W, 2)`` backward flow current -> previous.
        n: labels ``0..n-1`` are measured (larger ones are ignored).
        res: histogram bin width in pixels (the precision of the median).
        max_disp: displacements are clipped to ``[-max_disp, max_disp]``.

    Returns:
        ``(disp, count)``: float32 ``(n, 2)`` median displacement ``(dy, dx)`` of each label
        (0 where it has no pixel) and int64 ``(n,)`` pixels per label. Label 0 is not measured.
    """
    lab = np.asarray(labels).ravel()
    sel = (lab > 0) & (lab < n)
    lab = lab[sel].astype(np.int64)
    count = np.bincount(lab, minlength=n)[:n]
    B = 2 * int(np.ceil(max_disp / res)) + 1
    disp = np.zeros((n, 2), np.float32)
    if not len(lab):
        return disp, count
    # histograms of the labels present only: ids grow through a long video (never reused),
    # and a (max id x bins) table would make every frame slower than the one before
    present = np.flatnonzero(count)
    m = len(present)
    compact = np.zeros(n, np.int64)
    compact[present] = np.arange(m)
    row = compact[lab] * B
    half = (count[present] + 1) // 2
    for k, c in enumerate((1, 0)):  # (dy, dx) from flow channels (y, x)
        v = -flow[..., c].ravel()[sel]
        q = np.clip(np.rint(v * (1.0 / res)) + B // 2, 0, B - 1).astype(np.int64)
        hist = np.bincount(row + q, minlength=m * B)[: m * B].reshape(m, B)
        mb = (np.cumsum(hist, 1) < half[:, None]).sum(1)  # first bin reaching half the mass
        disp[present, k] = (mb - B // 2) * res
    return disp, count


def translate_labels(labels: np.ndarray, shifts: np.ndarray, fill: int = 0) -> np.ndarray:
    """Move every label of a map rigidly by its own integer shift (forward splat).

    Labels that do not move are laid down first, moving ones on top (a moving object
    occludes the static background it passes); out-of-frame pixels are dropped, pixels
    nothing lands on get ``fill``.

    Args:
        labels: int ``(H, W)`` label map (non-negative).
        shifts: int ``(n, 2)`` shift ``(dy, dx)`` of label ``l`` for ``l < n``; larger labels
            stay in place.
        fill: value of pixels no label lands on.

    Returns:
        int32 ``(H, W)``.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    n = len(shifts)
    sh = np.zeros((max(n, int(labels.max(initial=0)) + 1), 2), np.int64)
    sh[:n] = np.asarray(shifts, np.int64).reshape(n, 2)
    moving = np.any(sh != 0, axis=1)
    mov = np.take(moving, labels)
    out = np.where(mov, fill, labels).astype(np.int32)
    ys, xs = np.nonzero(mov)
    if len(ys):
        lab = labels[ys, xs]
        # larger labels first, smaller ones on top (small objects are usually in front)
        area = np.bincount(lab, minlength=len(sh))
        # rank the moving labels only (ids grow through a long video: sorting every id up
        # to the largest would make late frames slower); ties: smaller label first
        present = np.flatnonzero(area)
        rank = np.zeros(len(sh), np.int64)
        rank[present[np.argsort(-area[present], kind="stable")]] = np.arange(len(present))
        order = np.argsort(rank[lab].astype(np.uint16 if len(present) < 65536 else np.int64), kind="stable")
        ys, xs, lab = ys[order], xs[order], lab[order]
        yn, xn = ys + sh[lab, 0], xs + sh[lab, 1]
        ok = (yn >= 0) & (yn < h) & (xn >= 0) & (xn < w)
        out[yn[ok], xn[ok]] = lab[ok]
    return out


def _ncc(cur: np.ndarray, tpl: np.ndarray, mask: np.ndarray, y0: int, x0: int,
         lo: tuple[int, int], hi: tuple[int, int]) -> "tuple[np.ndarray, int, int] | None":
    """Masked TM_CCOEFF_NORMED of ``tpl`` (top-left at ``(y0, x0)`` in the previous frame)
    over shifts ``lo..hi`` (inclusive, ``(dy, dx)``) in ``cur``: ``(scores, dy0, dx0)`` with
    ``scores[a, b]`` the score of shift ``(dy0 + a, dx0 + b)``, or None. The template may
    leave the frame by up to half its size (an object crossing the border): the frame is
    padded by replication there."""
    h, w = cur.shape
    th, tw = tpl.shape
    wy0, wx0 = max(y0 + lo[0], -(th // 2)), max(x0 + lo[1], -(tw // 2))
    wy1, wx1 = min(y0 + hi[0], h - th + th // 2), min(x0 + hi[1], w - tw + tw // 2)
    if wy1 < wy0 or wx1 < wx0:
        return None
    win = cur[max(wy0, 0):min(wy1 + th, h), max(wx0, 0):min(wx1 + tw, w)]
    pad = (max(-wy0, 0), max(wy1 + th - h, 0), max(-wx0, 0), max(wx1 + tw - w, 0))
    if any(pad):
        win = cv2.copyMakeBorder(win, *pad, cv2.BORDER_REPLICATE)
    r = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED, mask=mask)
    return np.nan_to_num(r, nan=-1.0, posinf=-1.0, neginf=-1.0), wy0 - y0, wx0 - x0


def _ncc_at(cur: np.ndarray, tpl: np.ndarray, mask: np.ndarray, y: int, x: int) -> "float | None":
    """Masked normalised correlation of ``tpl`` placed at ``(y, x)`` in ``cur`` (the part
    inside the frame; None when less than half of the mask is inside)."""
    h, w = cur.shape
    th, tw = tpl.shape
    ya, xa, yb, xb = max(y, 0), max(x, 0), min(y + th, h), min(x + tw, w)
    if yb <= ya or xb <= xa:
        return None
    m = mask[ya - y:yb - y, xa - x:xb - x] > 0
    if 2 * int(m.sum()) < int(np.count_nonzero(mask)):
        return None
    a = tpl[ya - y:yb - y, xa - x:xb - x][m].astype(np.float32)
    b = cur[ya:yb, xa:xb][m].astype(np.float32)
    a -= a.mean()
    b -= b.mean()
    den = float(np.sqrt(float(a @ a) * float(b @ b)))
    return float(a @ b) / den if den > 0 else -1.0


def match_shifts(prev: np.ndarray, cur: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                 guesses: np.ndarray, radius: int = 20, accept: float = 1.0,
                 boxes: "np.ndarray | None" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label displacement previous -> current by masked template matching.

    Dense flow is coarse-to-fine: a small object that moves farther than its own size
    vanishes at the coarse levels and takes the background's motion, often consistently
    in both directions, so the forward-backward check confirms the wrong flow. Matching
    each object's own pixels (its previous mask as the template mask) against the current
    frame sees it whatever its speed. The search runs at half resolution and is refined
    at full resolution (2 pixels around the coarse optimum and around every guess).

    Args:
        prev, cur: uint8 grayscale ``(H, W)`` previous and current frames.
        labels: int ``(H, W)`` label map of the previous frame.
        ids: int ``(n,)`` labels to match.
        guesses: int ``(n, G, 2)`` candidate shifts ``(dy, dx)`` per label (e.g. the flow's
            median, the constant-velocity guess, zero): the search covers the box of the
            guesses widened by ``radius`` pixels.
        radius: search margin around the guesses, pixels.
        accept: a label whose first guess already scores at least this is not searched
            (its first guess is its shift).
        boxes: optional int ``(n, 4)`` bounding boxes ``(y0, x0, y1, x1)`` (exclusive ends)
            of the labels in ``labels``, when known (saves a pass over the map).

    Returns:
        ``(shift, score, first_score)``: int64 ``(n, 2)`` best shift ``(dy, dx)``, float32
        ``(n,)`` its masked normalised correlation (TM_CCOEFF_NORMED, -1..1; -1 = not
        measured: label absent, flat or the search outside the frame) and float32 ``(n,)``
        the correlation at the first guess.
    """
    prev = np.asarray(prev)
    cur = np.asarray(cur)
    labels = np.asarray(labels)
    if prev.shape != cur.shape or prev.shape != labels.shape:
        raise ValueError(f"frames {prev.shape}/{cur.shape} and labels {labels.shape} must have one shape")
    ids = np.asarray(ids, np.int64).ravel()
    n = len(ids)
    guesses = np.asarray(guesses, np.int64)
    if guesses.ndim != 3 or guesses.shape[0] != n or guesses.shape[2] != 2 or guesses.shape[1] < 1:
        raise ValueError(f"guesses must be (n={n}, G >= 1, 2); got {guesses.shape}")
    shift = np.zeros((n, 2), np.int64)
    score = np.full(n, -1.0, np.float32)
    first = np.full(n, -1.0, np.float32)
    h, w = labels.shape
    if boxes is not None:
        objs = [(slice(int(b[0]), int(b[2])), slice(int(b[1]), int(b[3]))) if b[2] > b[0] and b[3] > b[1] else None
                for b in np.asarray(boxes, np.int64).reshape(n, 4)]
    else:
        m = int(ids.max(initial=0))
        found = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=m) if m > 0 else []
        objs = [found[k - 1] if 0 < k <= len(found) else None for k in ids.tolist()]
    half = None
    for i, (lab, sl) in enumerate(zip(ids.tolist(), objs)):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        mask = (labels[y0:y1, x0:x1] == lab).astype(np.uint8)
        tpl = prev[y0:y1, x0:x1]
        if not mask.any() or float(cv2.meanStdDev(tpl, mask=mask)[1][0, 0]) < 1.0:
            continue  # flat: no texture to match
        g0 = (int(guesses[i, 0, 0]), int(guesses[i, 0, 1]))
        f0 = _ncc_at(cur, tpl, mask, y0 + g0[0], x0 + g0[1])
        if f0 is not None:
            first[i] = f0
            shift[i], score[i] = g0, f0
            if f0 >= accept:
                continue
        lo = guesses[i].min(0) - radius
        hi = guesses[i].max(0) + radius
        spots = [(lo, hi)]  # full-resolution windows (lo, hi) to search
        if min(y1 - y0, x1 - x0) >= 8:
            # coarse: the same search at half resolution, refined 2 px around its optimum
            # and around every guess (a small object may not survive the coarse level)
            if half is None:
                # low-pass first (Gaussian pyramid): fine texture at a half-pixel offset
                # would not correlate at all
                half = tuple(cv2.pyrDown(a) for a in (prev, cur))
                lab_h = cv2.resize(labels.astype(np.int32, copy=False), half[0].shape[::-1], interpolation=cv2.INTER_NEAREST)
            hy0, hx0 = y0 // 2, x0 // 2
            hy1, hx1 = max(-(-y1 // 2), hy0 + 1), max(-(-x1 // 2), hx0 + 1)
            hm = (lab_h[hy0:hy1, hx0:hx1] == lab).astype(np.uint8)
            rc = _ncc(half[1], half[0][hy0:hy1, hx0:hx1], hm, hy0, hx0,
                      (int(lo[0]) // 2, int(lo[1]) // 2), (-(-int(hi[0]) // 2), -(-int(hi[1]) // 2))) if hm.any() else None
            centres = {tuple(int(v) for v in g) for g in guesses[i]}
            if rc is not None:
                _, _, _, (bx, by) = cv2.minMaxLoc(rc[0])
                centres.add((2 * (rc[1] + by), 2 * (rc[2] + bx)))
            spots = [(np.array([cy - 2, cx - 2]), np.array([cy + 2, cx + 2])) for cy, cx in sorted(centres)]
        for lo, hi in spots:
            rf = _ncc(cur, tpl, mask, y0, x0, (int(lo[0]), int(lo[1])), (int(hi[0]), int(hi[1])))
            if rf is None:
                continue
            _, best, _, (bx, by) = cv2.minMaxLoc(rf[0])
            if best > score[i]:
                shift[i], score[i] = (rf[1] + by, rf[2] + bx), best
    return shift, score, first
