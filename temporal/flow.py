"""Dense optical flow (OpenCV DIS / Farneback), the colour check along it, warping.

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


from diffseg_core.errors import look_up_option

FLOW_BACKENDS = ("dis", "farneback")
DIS_PRESETS = ("ultrafast", "fast", "medium")


@runtime_checkable
class FlowEstimator(Protocol):
    """Anything that maps two uint8 grayscale ``(H, W)`` images to float32 ``(H, W, 2)`` flow."""

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


#: The smallest side OpenCV's DIS flow is safe with: it refuses 11 x 11 or 5 x 400 frames
#: with an error and crashes the process (segmentation fault) on 31 x 300 ones with its
#: ultrafast and fast presets (OpenCV 5.1). Smaller frames are padded to it.
DIS_MIN_SIDE = 32


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
        a, b = _gray(a), _gray(b)
        h, w = a.shape
        if min(h, w) >= DIS_MIN_SIDE:
            return self._dis.calc(a, b, None)
        # OpenCV's DIS refuses frames this small (a thumbnail, a strip): computed on the
        # frames with their borders repeated out to the smallest size it takes, then cropped
        pad = (0, max(0, DIS_MIN_SIDE - h), 0, max(0, DIS_MIN_SIDE - w))
        a, b = (cv2.copyMakeBorder(x, *pad, cv2.BORDER_REPLICATE) for x in (a, b))
        return np.ascontiguousarray(self._dis.calc(a, b, None)[:h, :w])


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
def _grid2(h: int, w: int) -> np.ndarray:
    """float32 ``(h, w, 2)`` pixel coordinates ``(x, y)`` (cached; read-only)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    g = np.stack([gx, gy], axis=-1)
    g.flags.writeable = False
    return g


def sources(flow: np.ndarray) -> np.ndarray:
    """float32 ``(H, W, 2)``: where the backward flow samples every pixel from, ``(x, y)``
    (one map for `cv2.remap`: faster than two, which it would interleave itself). Computed
    once, it serves both `colour_check` and `warp_labels` of one flow."""
    return flow + _grid2(*flow.shape[:2])


def colour_check(prev_img: np.ndarray, img: np.ndarray, backward: np.ndarray, tol: int,
                 src: "np.ndarray | None" = None) -> np.ndarray:
    """Pixels of the current frame that the backward flow vouches for: it brings them from
    inside the previous frame, and their colour is the one it brings (bilinear): every
    channel within ``tol``.

    What fails: pixels occluded or uncovered by a moving object, an object gone or appeared
    in place, a change of look, and a flow that fell behind its object (which a
    forward-backward round trip does not see: the wrong flow agrees with itself both ways).
    Checked in colour where the frames are in colour: an object as bright as the ground
    leaves a trail grey levels do not show.

    Args:
        prev_img, img: uint8 ``(H, W, C)`` or ``(H, W)`` previous and current frame.
        backward: float32 ``(H, W, 2)``, flow current -> previous.
        tol: grey levels.
        src: ``sources(backward)`` when at hand.

    Returns:
        bool ``(H, W)``.
    """
    h, w = backward.shape[:2]
    src = sources(backward) if src is None else src
    if img.ndim == 3 and img.shape[2] == 3:
        # OpenCV's remap vectorises 4 channels, not 3: the same values in about half the
        # time (the alpha channel is 255 in both frames, so it always passes)
        prev_img, img = (cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2RGBA) for a in (prev_img, img))
    was = cv2.remap(prev_img, src, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bound = (tol,) * (img.shape[2] if img.ndim == 3 else 1)  # all channels at once
    ok = cv2.inRange(cv2.absdiff(img, was), (0,) * len(bound), bound) > 0
    ok &= cv2.inRange(src, (0.0, 0.0), (float(w - 1), float(h - 1))) > 0  # from inside the previous frame
    return ok


def warp_labels(labels: np.ndarray, flow: np.ndarray, valid: "np.ndarray | None" = None,
                fill: int = 0, border_replicate: bool = False, src: "np.ndarray | None" = None) -> np.ndarray:
    """Bring a previous frame's label map into the current frame (nearest neighbour).

    Args:
        labels: int ``(H, W)`` labels of the previous frame (ids < 2**31).
        flow: float32 ``(H, W, 2)`` backward flow current -> previous.
        valid: optional bool ``(H, W)``; False pixels get ``fill``.
        fill: value for invalid and out-of-frame pixels.
        border_replicate: out-of-frame samples take the nearest border label instead of
            ``fill`` (label propagation, where every pixel needs an id).
        src: ``sources(flow)`` when at hand.

    Returns:
        int32 ``(H, W)``.
    """
    labels = np.asarray(labels)
    if labels.dtype not in (np.uint8, np.int32):
        labels = labels.astype(np.int32)
    border = cv2.BORDER_REPLICATE if border_replicate else cv2.BORDER_CONSTANT
    src = sources(flow) if src is None else src
    out = cv2.remap(labels, src, None, cv2.INTER_NEAREST, borderMode=border, borderValue=fill)
    out = out.astype(np.int32, copy=False)
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


def label_displacements(labels: np.ndarray, flow: np.ndarray, n: int, res: float = 0.5,
                        max_disp: float = 64.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust per-label displacement previous -> current: the median of ``-flow`` per label.

    The median is read off per-label histograms of the flow (bins of ``res`` pixels), so the
    cost is two ``bincount`` passes over the map whatever the number of labels.

    Args:
        labels: non-negative int ``(H, W)`` labels in the *current* frame (e.g. the previous
            ids warped with the colour check's mask: 0 = unreliable pixel, ignored).
        flow: float32 ``(H, W, 2)`` backward flow current -> previous.
        n: labels ``1..n-1`` are measured (larger ones are ignored).
        res: histogram bin width in pixels (the precision of the median).
        max_disp: displacements are clipped to ``[-max_disp, max_disp]``.

    Returns:
        ``(disp, count)``: float32 ``(n, 2)`` median displacement ``(dy, dx)`` of each label
        (0 where it has no pixel) and int64 ``(n,)`` pixels per label. Label 0 is not measured.
    """
    lab = np.asarray(labels).ravel()
    cnt = np.bincount(lab)
    count = np.zeros(n, np.int64)
    count[:min(n, len(cnt))] = cnt[:n]
    count[0] = 0
    B = 2 * int(np.ceil(max_disp / res)) + 1
    disp = np.zeros((n, 2), np.float32)
    # histograms of the labels present only: ids grow through a long video (never reused),
    # and a (max id x bins) table would make every frame slower than the one before. Every
    # pixel is counted, the unmeasured ones (0, >= n) in a last row that is dropped: cheaper
    # than selecting the measured pixels
    present = np.flatnonzero(count)
    m = len(present)
    if not m:
        return disp, count
    compact = np.full(len(cnt), m, np.int64)
    compact[present] = np.arange(m)
    row = np.take(compact, lab)
    row *= B
    half = (count[present] + 1) // 2
    for k, c in enumerate((1, 0)):  # (dy, dx) from flow channels (y, x)
        q = flow[..., c] * np.float32(-1.0 / res)  # the displacement is -flow
        np.rint(q, out=q)
        q += B // 2
        np.clip(q, 0, B - 1, out=q)
        code = q.astype(np.int64).ravel()
        code += row
        hist = np.bincount(code, minlength=(m + 1) * B)[: m * B].reshape(m, B)
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


