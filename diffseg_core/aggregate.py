"""Step 1 of DiffSeg: aggregate multi-resolution self-attention into one 4-D tensor.

Every layer's attention ``(N_r, N_r)`` lives on its own grid ``h_r x w_r``. For each
resolution the key dimensions are bilinearly upsampled to the finest grid ``h x w`` (half-pixel
centres, as TF2/`align_corners=False`) and renormalised to sum 1, the query dimensions are
tiled (nearest: every fine query takes its coarse parent's map), and the resolutions are
summed with weights proportional to their side length (64:32:16:8 / 120 for SD at 512 px).
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F


def layer_grid(n_tokens: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The ``(h_r, w_r)`` grid of a layer with ``n_tokens`` positions in a UNet whose finest grid
    is ``latent_hw``; each UNet level halves the sides with ceil (stride-2 convs, padding 1).

    Raises:
        ValueError: if no level of ``latent_hw`` has ``n_tokens`` positions.
    """
    h, w = int(latent_hw[0]), int(latent_hw[1])
    hh, ww = h, w
    while hh * ww > n_tokens and (hh > 1 or ww > 1):
        hh, ww = -(-hh // 2), -(-ww // 2)
    if hh * ww != n_tokens:
        raise ValueError(
            f"an attention map with {n_tokens} positions is not a level of the {h}x{w} latent grid"
        )
    return hh, ww


def square_side(n_tokens: int) -> int:
    """Side of a square grid with ``n_tokens`` positions (ValueError if not square)."""
    s = math.isqrt(int(n_tokens))
    if s * s != n_tokens:
        raise ValueError(
            f"attention map with {n_tokens} positions is not square; pass latent_hw=(h, w)"
        )
    return s


def resolution_weights(shapes: Sequence[tuple[int, int]]) -> list[float]:
    """Weight of each distinct grid, proportional to its side (sqrt of its size)."""
    sides = [math.sqrt(h * w) for h, w in shapes]
    total = sum(sides)
    return [s / total for s in sides]


@functools.lru_cache(maxsize=16)
def bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """float32 ``(n_in, n_out)``: 1-D bilinear resampling of ``n_in`` samples to ``n_out``
    (half-pixel centres, edges clamped: the weights of ``F.interpolate(mode="bilinear",
    align_corners=False)``, read off by resampling the identity). Cached; do not modify."""
    eye = torch.eye(n_in, dtype=torch.float32).reshape(n_in, 1, n_in, 1)
    return F.interpolate(eye, size=(n_out, 1), mode="bilinear", align_corners=False).reshape(n_in, n_out).contiguous()


def upsample_maps(maps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of many small maps ``(N, h_r, w_r)`` to ``(N, h, w)`` (float32).

    The separable resampling as two matrix products (along x, then y): the same weights as
    ``F.interpolate(mode="bilinear", align_corners=False)`` (equal up to float rounding),
    7x faster on the CPU for the 32x32 layer's 1024 maps of the 64x64 grid, whose
    interpolation kernel loops over small maps one at a time.
    """
    N, hr, wr = maps.shape
    h, w = int(hw[0]), int(hw[1])
    ux = bilinear_matrix(wr, w).to(maps.device)
    uy = bilinear_matrix(hr, h).to(maps.device)
    rows = (maps.reshape(N * hr, wr) @ ux).reshape(N, hr, w)
    return torch.matmul(uy.T, rows)


def aggregate(maps: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]],
              latent_hw: tuple[int, int], inplace: bool = False) -> torch.Tensor:
    """Aggregate per-resolution attention into the finest grid.

    Args:
        maps: one float tensor ``(B, N_i, N_i)`` per layer (heads already averaged), rows are
            distributions over the ``N_i = h_i * w_i`` keys (row-major positions).
        shapes: the grid ``(h_i, w_i)`` of every entry of ``maps``. Layers sharing a grid are
            averaged first (the original averages all heads of a resolution).
        latent_hw: the finest grid ``(h, w)``; coarser grids must divide it by powers of 2.
        inplace: the caller gives its maps up: the finest grid's map, when it is the only
            one of its grid and a contiguous float32 tensor, is weighted in place and becomes
            the result (a fresh N x N tensor costs page faults about as much as the
            arithmetic: 15 ms of 34 at 64x64 on 2 CPU cores, in a micro-benchmark).

    Returns:
        float32 ``(B, N, h, w)`` with ``N = h * w``: ``out[b, q]`` is the aggregated attention
        distribution of fine query ``q`` (each sums to 1).
    """
    if len(maps) == 0:
        raise ValueError("aggregate needs at least one attention map")
    if len(maps) != len(shapes):
        raise ValueError(f"got {len(maps)} maps but {len(shapes)} shapes")
    h, w = int(latent_hw[0]), int(latent_hw[1])
    groups: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m, s in zip(maps, shapes):
        s = (int(s[0]), int(s[1]))
        if m.ndim != 3 or m.shape[1] != s[0] * s[1] or m.shape[2] != s[0] * s[1]:
            raise ValueError(f"map for grid {s} must be (B, {s[0] * s[1]}, {s[0] * s[1]}); got {tuple(m.shape)}")
        groups.setdefault(s, []).append(m)
    batch = {int(m.shape[0]) for m in maps}
    if len(batch) != 1:
        raise ValueError(f"all maps must share the batch size; got {sorted(batch)}")
    B = batch.pop()
    grid_list = list(groups)
    weights = resolution_weights(grid_list)
    device = maps[0].device
    out: "torch.Tensor | None" = None
    pending: "tuple[tuple[int, int], torch.Tensor] | None" = None  # coarse levels summed so far

    def flush() -> None:
        """Add the pending coarse sum to every fine query under its coarse query."""
        nonlocal out, pending
        if pending is None:
            return
        (hr, wr), keys = pending
        pending = None
        if out is None:
            out = torch.zeros(B, h * w, h, w, dtype=torch.float32, device=device)
        if h % hr == 0 and w % wr == 0:
            # Tile the queries by broadcasting into a strided view of `out`: no N x N temporary.
            view = out.view(B, hr, h // hr, wr, w // wr, h * w)
            view.add_(keys[:, :, None, :, None, :])
        else:  # odd sizes (ceil halving): nearest parent by index
            iy = torch.div(torch.arange(h, device=device) * hr, h, rounding_mode="floor")
            ix = torch.div(torch.arange(w, device=device) * wr, w, rounding_mode="floor")
            tiled = keys.index_select(1, iy).index_select(2, ix)
            out.add_(tiled.reshape(B, h * w, h, w))

    # Finest grid first: it initialises `out` (one N x N allocation in all). The coarser
    # grids, coarsest first, are summed on their own (small) query grids, each tiled onto the
    # next finer one, so that the N x N result is written once for all of them.
    order = sorted(range(len(grid_list)), key=lambda i: -grid_list[i][0] * grid_list[i][1])
    order = order[:1] + order[1:][::-1]
    for (hr, wr), wt in ((grid_list[i], weights[i]) for i in order):
        if hr > h or wr > w:
            raise ValueError(f"attention grid {hr}x{wr} is finer than the latent grid {h}x{w}")
        m = groups[(hr, wr)]
        m = (m[0] if len(m) == 1 else torch.stack(m).mean(0)).to(device=device, dtype=torch.float32)
        keys = m.reshape(B * hr * wr, 1, hr, wr)
        if (hr, wr) != (h, w):
            keys = upsample_maps(keys.reshape(-1, hr, wr), (h, w)).reshape(B * hr * wr, 1, h, w)
        sums = keys.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        if (hr, wr) == (h, w):
            if out is None:
                own = inplace and len(groups[(hr, wr)]) == 1 and keys.data_ptr() == groups[(hr, wr)][0].data_ptr()
                out = (keys.div_(sums / wt) if own else torch.div(keys, sums / wt)).reshape(B, h * w, h, w)
            else:
                out.add_((keys / sums).reshape(B, h * w, h, w), alpha=wt)
            continue
        keys = torch.div(keys, sums / wt).reshape(B, hr, wr, h * w)
        if pending is not None:
            (hc, wc), coarse = pending
            if hr % hc == 0 and wr % wc == 0:
                keys.view(B, hc, hr // hc, wc, wr // wc, h * w).add_(coarse[:, :, None, :, None, :])
                pending = None
            else:
                flush()
        pending = ((hr, wr), keys)
    flush()
    assert out is not None
    return out


def aggregate_cross(maps: Sequence[torch.Tensor], shapes: Sequence[tuple[int, int]],
                    out_hw: tuple[int, int]) -> torch.Tensor:
    """Aggregate per-resolution cross-attention into one map per prompt token.

    As the original's semantic mode: each resolution's ``(h_r, w_r)`` token maps are
    bilinearly upsampled to ``out_hw`` (half-pixel centres), renormalised over the tokens at
    every pixel, and the resolutions summed with `resolution_weights`.

    Args:
        maps: float ``(B, N_i, L)`` per grid (heads and layers of the grid averaged): each
            query's distribution over the ``L`` prompt tokens.
        shapes: the grid ``(h_i, w_i)`` of each entry (one entry per grid).
        out_hw: ``(h, w)`` of the result (the finest attention grid).

    Returns:
        float32 ``(B, L, h, w)``; at every pixel the ``L`` values sum to 1.
    """
    if len(maps) == 0 or len(maps) != len(shapes):
        raise ValueError(f"aggregate_cross needs one map per grid; got {len(maps)} maps and {len(shapes)} shapes")
    h, w = int(out_hw[0]), int(out_hw[1])
    weights = resolution_weights([tuple(s) for s in shapes])
    out: "torch.Tensor | None" = None
    for m, (hr, wr), wt in zip(maps, shapes, weights):
        if m.ndim != 3 or m.shape[1] != hr * wr:
            raise ValueError(f"cross map for grid {(hr, wr)} must be (B, {hr * wr}, L); got {tuple(m.shape)}")
        x = m.to(torch.float32).reshape(m.shape[0], hr, wr, m.shape[2]).permute(0, 3, 1, 2)
        if (hr, wr) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        x = x / x.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        out = x * wt if out is None else out.add_(x, alpha=wt)
    assert out is not None
    return out.contiguous()
