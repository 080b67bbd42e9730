"""Step 3 of DiffSeg: upsample the proposals to the output size and take the argmax."""
from __future__ import annotations

import torch

#: Output rows per chunk; bounds the ``(K, rows, W)`` upsampled block.
ROW_CHUNK = 256


def interp_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float32,
                  device: "torch.device | str | None" = None) -> torch.Tensor:
    """``(n_out, n_in)`` linear-interpolation matrix with half-pixel centres
    (``F.interpolate(..., mode="bilinear", align_corners=False)`` along one axis)."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    l1 = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, i0), 1 - l1, accumulate=True)
    m.index_put_((rows, i1), l1, accumulate=True)
    return m.to(dtype=dtype, device=device)


def upsample_argmax(proposals: torch.Tensor, out_size: tuple[int, int],
                    row_chunk: int = ROW_CHUNK) -> torch.Tensor:
    """Bilinearly upsample ``(K, h, w)`` proposals to ``out_size`` and argmax over K.

    Computed separably (``Wy @ P @ Wx^T``) in row chunks so memory stays ``O(K * chunk * W)``
    even for 4K frames. Ties go to the lowest index, like the original.

    Returns:
        int64 ``(H, W)`` proposal index per pixel.
    """
    H, W = int(out_size[0]), int(out_size[1])
    K, h, w = proposals.shape
    p = proposals.float()
    wy = interp_matrix(h, H, device=p.device)
    wx = interp_matrix(w, W, device=p.device)
    cols = torch.einsum("khw,xw->khx", p, wx)  # (K, h, W)
    out = torch.empty(H, W, dtype=torch.long, device=p.device)
    for r in range(0, H, row_chunk):
        block = torch.einsum("yh,khx->kyx", wy[r:r + row_chunk], cols)
        out[r:r + row_chunk] = block.argmax(0)
    return out


def relabel_consecutive(index: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the indices present in ``index`` to ``0..K-1`` keeping their order.

    Returns:
        ``(labels, kept)``: int32 labels like ``index`` and the long ``(K,)`` original indices.
    """
    present = torch.bincount(index.reshape(-1), minlength=num) > 0
    kept = torch.nonzero(present).reshape(-1)
    lut = torch.full((num,), -1, dtype=torch.long, device=index.device)
    lut[kept] = torch.arange(len(kept), device=index.device)
    return lut[index].to(torch.int32), kept
