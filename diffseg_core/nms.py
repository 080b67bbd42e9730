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
        int32 ``(H, W)`` proposal index per pixel (4 bytes a pixel: a 16000 x 16000 image's
        index is 1 GiB, not 2).
    """
    H, W = int(out_size[0]), int(out_size[1])
    K, h, w = proposals.shape
    p = proposals.float()
    wy = interp_matrix(h, H, device=p.device)
    wx = interp_matrix(w, W, device=p.device)
    cols = torch.einsum("khw,xw->khx", p, wx)  # (K, h, W)
    out = torch.empty(H, W, dtype=torch.int32, device=p.device)
    for r in range(0, H, row_chunk):
        block = torch.einsum("yh,khx->kyx", wy[r:r + row_chunk], cols)
        out[r:r + row_chunk] = block.argmax(0)
    return out


def relabel_consecutive(index: torch.Tensor, num: int, row_chunk: int = ROW_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the indices present in ``index`` (``0..num-1``) to ``0..K-1`` keeping their order,
    in place when ``index`` is int32 (row chunks: no full-size temporary).

    Returns:
        ``(labels, kept)``: int32 labels like ``index`` and the long ``(K,)`` original indices.
    """
    labels = (index if index.dtype == torch.int32 else index.to(torch.int32)).contiguous()
    flat = labels.reshape(labels.shape[0], -1) if labels.ndim else labels.reshape(1, 1)  # a view: writes reach labels
    present = torch.zeros(num, dtype=torch.bool, device=index.device)
    for r in range(0, flat.shape[0], row_chunk):
        present |= torch.bincount(flat[r:r + row_chunk].reshape(-1).long(), minlength=num)[:num] > 0
    kept = torch.nonzero(present).reshape(-1)
    lut = torch.full((num,), -1, dtype=torch.int32, device=index.device)
    lut[kept] = torch.arange(len(kept), dtype=torch.int32, device=index.device)
    for r in range(0, flat.shape[0], row_chunk):
        flat[r:r + row_chunk] = lut[flat[r:r + row_chunk].long()]
    return labels, kept
