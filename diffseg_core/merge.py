"""Step 2 of DiffSeg: iterative merging of attention maps by symmetric KL divergence.

Iteration 0 compares a grid of anchor maps with every map; each anchor becomes the mean of
the maps within the threshold. Later iterations greedily merge the proposals among
themselves. Every KL divergence is computed for all pairs at once as matrix products:

    KL_sym(a, b) = 0.5 * sum (a - b)(log a - log b)
                 = 0.5 * (a.log a + b.log b - a.log b - b.log a)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

#: Rows of maps per matrix product: bounds memory and keeps each chunk's temporaries in cache.
KL_CHUNK = 1024
#: Pairs whose float32 matrix-product KL lies this close to the threshold are recomputed
#: with the original's elementwise float16 rounding (observed gap <= 0.0011, about one
#: float16 ulp at 1.1, on the reference generator's attention).
FP16_RECHECK_MARGIN = 0.01
#: Largest value that float16 rounds to 0 (round to nearest even): 2**-25.
FP16_ZERO = 2.0 ** -25
#: Pairs per chunk in that elementwise recomputation.
PAIR_CHUNK = 1024


def axis_anchor_positions(length: int, n: int) -> list[int]:
    """``n`` evenly spaced, centred integer positions in ``[0, length)`` (original's rule:
    step ``(length-1)//(n-1)``, start centring the span; for 64 and 16: 1, 5, ..., 61)."""
    if n <= 1:
        return [(length - 1) // 2]
    step = (length - 1) // (n - 1)
    if step == 0:  # more anchors than positions: every position is an anchor
        return list(range(length))
    span = step * (n - 1)
    start = (length - 1 - span) // 2
    return [start + step * i for i in range(n)]


def anchor_grid(latent_hw: tuple[int, int], grid: int = 16) -> torch.Tensor:
    """Flat (row-major) query indices of the anchors, in row-major anchor order.

    ``grid`` anchors go along the shorter side; the longer side gets proportionally more so
    the spacing stays square on any aspect ratio (16x16 on a square latent, like the paper).
    """
    h, w = int(latent_hw[0]), int(latent_hw[1])
    short = min(h, w)
    n_h = grid if h == short else max(1, round(grid * h / short))
    n_w = grid if w == short else max(1, round(grid * w / short))
    ys = torch.tensor(axis_anchor_positions(h, n_h))
    xs = torch.tensor(axis_anchor_positions(w, n_w))
    return (ys[:, None] * w + xs[None, :]).reshape(-1)


def _safe_log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def sym_kl_matrix(a: torch.Tensor, b: torch.Tensor, nan_on_zero: bool = False,
                  eps: float = 0.0, chunk: int = KL_CHUNK) -> torch.Tensor:
    """Symmetric KL ``0.5 * (KL(a||b) + KL(b||a))`` between all rows of ``a`` and ``b``.

    Args:
        a: ``(M, D)`` distributions (rows sum to 1), float32 or float64.
        b: ``(N, D)`` distributions, same dtype.
        nan_on_zero: reproduce elementwise ``x * log x`` semantics: a pair whose rows hold an
            exact zero gets NaN (it then never passes a ``<`` threshold), like the original.
        eps: clamp both inputs to at least ``eps`` before the logs (0 = no clamping).
        chunk: rows of ``b`` per matrix product (memory bound).

    Returns:
        ``(M, N)`` in ``a``'s dtype, >= 0 up to rounding.
    """
    if eps > 0:
        a = a.clamp_min(eps)  # (b chunk by chunk below: no clamped copy of it all)
    # With nan_on_zero a zero gives log 0 = -inf and 0 * -inf = NaN in the row's entropy
    # term, which flags the row for free; otherwise clamp so the logs stay finite.
    log = torch.log if nan_on_zero or eps > 0 else _safe_log
    la = log(a)
    ea = (a * la).sum(1)
    out = torch.empty(a.shape[0], b.shape[0], dtype=a.dtype, device=a.device)
    zb = torch.zeros(b.shape[0], dtype=torch.bool, device=b.device)
    # One buffer for every chunk's logs (and clamped rows): fresh chunk-sized tensors cost
    # page faults on the CPU, about a quarter of this function's time at 64x64.
    lb_buf = torch.empty(min(chunk, b.shape[0]), b.shape[1], dtype=b.dtype, device=b.device)
    cb_buf = torch.empty_like(lb_buf) if eps > 0 else None
    tiny = torch.finfo(b.dtype).tiny
    for s in range(0, b.shape[0], chunk):
        bc = b[s:s + chunk]
        n = bc.shape[0]
        if cb_buf is not None:
            bc = torch.clamp_min(bc, eps, out=cb_buf[:n])
        lb = lb_buf[:n]
        if log is _safe_log:
            torch.log(torch.clamp_min(bc, tiny, out=lb), out=lb)
        else:
            torch.log(bc, out=lb)
        eb = torch.linalg.vecdot(bc, lb)
        o = out[:, s:s + chunk]
        torch.matmul(a, lb.T, out=o)  # KL(a||b) + KL(b||a) = ea + eb - a.lb - la.b
        o.addmm_(la, bc.T).mul_(-0.5).add_(0.5 * (ea[:, None] + eb[None, :]))
        if nan_on_zero:
            zb[s:s + chunk] = torch.isnan(eb)
    if nan_on_zero:
        za = torch.isnan(ea)
        out[za, :] = float("nan")
        out[:, zb] = float("nan")
    return out


def _r16(t: torch.Tensor) -> torch.Tensor:
    """Round float32 values to the nearest float16 (kept as float32)."""
    return t.half().float()


def fp16_kl_pairs(a16: torch.Tensor, b16: torch.Tensor, la16: torch.Tensor,
                  lb16: torch.Tensor) -> torch.Tensor:
    """Symmetric KL of row pairs ``(a16[i], b16[i])`` with the original's float16 arithmetic.

    The original (TensorFlow, ``tf.cast(..., tf.float16)``) rounds every log, difference and
    product to float16, sums with float32 accumulation, and rounds both halves and the
    result to float16. Each float32 operation below on float16-representable operands,
    rounded once, is exactly that float16 operation.

    Args:
        a16, b16: float32 ``(P, D)`` already rounded to float16 values.
        la16, lb16: their logs rounded to float16 (float32 ``(P, D)``).

    Returns:
        float32 ``(P,)``.
    """
    q = _r16(la16 - lb16)
    s1 = _r16(_r16(a16 * q).sum(1))
    s2 = _r16(_r16(b16 * q).sum(1))
    return _r16(_r16(s1 / 2) + _r16(-s2 / 2))


def merge_anchors(maps: torch.Tensor, anchors: torch.Tensor, threshold: float,
                  faithful_fp16: bool = True) -> torch.Tensor:
    """Iteration 0: every anchor becomes the mean of all maps within ``threshold`` of it.

    Args:
        maps: float ``(N, D)``: the aggregated attention map of every query (rows sum to 1).
        anchors: long ``(M,)`` query indices of the anchors.
        threshold: symmetric-KL threshold (strict ``<``).
        faithful_fp16: reproduce the original's float16 first merge: the threshold rounded
            to float16 (1.1 -> 1.099609375), the KL as float32 matrix products, and every pair
            within `FP16_RECHECK_MARGIN` of the threshold recomputed with the original's
            elementwise float16 rounding (`fp16_kl_pairs`), so the decisions equal a float16
            run at matrix-product speed. Maps holding a value that underflows to 0 in float16
            get NaN divergences and their anchors vanish, as in the original. ``False``:
            float32, eps-clamped.

    Returns:
        ``(M', D)`` merged maps (means of the un-rounded maps), ``M' <= M``: anchors that match
        nothing (NaN rows) are dropped, order kept.
    """
    x = maps.float()
    if faithful_fp16:
        a16 = _r16(x[anchors])
        kl = sym_kl_matrix(a16, x, nan_on_zero=True)
        kl[:, x.amin(1) <= FP16_ZERO] = float("nan")  # maps with a float16 zero (a16's give NaN)
        thr = float(np.float16(threshold))
        rows, cols = torch.nonzero((kl - thr).abs() < FP16_RECHECK_MARGIN, as_tuple=True)
        if len(rows):
            la16 = _r16(torch.log(a16))
            for s in range(0, len(rows), PAIR_CHUNK):
                r, c = rows[s:s + PAIR_CHUNK], cols[s:s + PAIR_CHUNK]
                b16 = _r16(x[c])
                kl[r, c] = fp16_kl_pairs(a16[r], b16, la16[r], _r16(torch.log(b16)))
    else:
        kl = sym_kl_matrix(x[anchors], x, eps=1e-12)
        thr = float(threshold)
    member = (kl < thr).to(x.dtype)  # NaN compares False
    counts = member.sum(1)
    keep = counts > 0
    merged = (member[keep] @ x) / counts[keep, None]
    return merged


def merge_greedy(props: torch.Tensor, threshold: float, nan_on_zero: bool = True) -> torch.Tensor:
    """A later iteration: in order, each proposal not yet merged gathers every proposal within
    ``threshold`` (already merged ones included, as in the original) into their mean.

    Args:
        props: ``(P, D)`` proposals (distributions); computed in float64 like the original.
        threshold: symmetric-KL threshold (strict ``<``).
        nan_on_zero: a proposal holding an exact 0 has NaN divergences and vanishes, as in
            the original (log 0); False: eps-clamped logs keep it (the float32 path).

    Returns:
        ``(P', D)`` float64 merged proposals, ``P' <= P``.
    """
    x = props.double()
    kl = sym_kl_matrix(x, x, nan_on_zero=True) if nan_on_zero else sym_kl_matrix(x, x, eps=1e-12)
    close = (kl < threshold).cpu().numpy()  # (P, P) bool; the loop below is O(P) row ops
    done = np.zeros(len(close), dtype=bool)
    groups: list[np.ndarray] = []
    for i in range(len(close)):
        if done[i]:
            continue
        done[i] = True
        row = close[i]
        if row.any():
            done |= row
            groups.append(row)
    if not groups:
        return x[:0]
    member = torch.from_numpy(np.stack(groups)).to(device=x.device, dtype=x.dtype)
    return (member @ x) / member.sum(1, keepdim=True)


def iterative_merge(maps: torch.Tensor, latent_hw: tuple[int, int],
                    kl_threshold: Sequence[float] = (1.1, 1.1, 1.1), grid: int = 16,
                    faithful_fp16: bool = True) -> torch.Tensor:
    """All merge iterations: the anchor merge, then ``len(kl_threshold) - 1`` greedy ones.

    Args:
        maps: float ``(N, h, w)`` aggregated attention (``N = h*w``).
        latent_hw: ``(h, w)``.
        kl_threshold: one threshold per iteration (paper: ``[1.1] * 3``).
        grid: anchors along the shorter side.
        faithful_fp16: see `merge_anchors`.

    Returns:
        float64 ``(K, h, w)`` proposals, each a distribution.
    """
    h, w = latent_hw
    flat = maps.reshape(h * w, h * w)
    anchors = anchor_grid(latent_hw, grid).to(flat.device)
    props = merge_anchors(flat, anchors, kl_threshold[0], faithful_fp16=faithful_fp16).double()
    for thr in kl_threshold[1:]:
        props = merge_greedy(props, thr, nan_on_zero=faithful_fp16)
    return props.reshape(-1, h, w)
