import torch
import torch.nn.functional as F

from diffseg_core.nms import interp_matrix, relabel_consecutive, upsample_argmax


def test_interp_matrix_equals_bilinear_interpolate():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 7, 5, generator=g)
    for H, W in [(56, 40), (13, 9), (7, 5), (4, 3)]:
        ref = F.interpolate(x[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        got = torch.einsum("yh,khw,xw->kyx", interp_matrix(7, H), x, interp_matrix(5, W))
        assert torch.allclose(got, ref, atol=1e-6), (H, W)


def test_upsample_argmax_chunked_equals_full():
    g = torch.Generator().manual_seed(1)
    p = torch.rand(4, 8, 12, generator=g)
    ref = F.interpolate(p[None], size=(37, 50), mode="bilinear", align_corners=False)[0].argmax(0)
    assert torch.equal(upsample_argmax(p, (37, 50), row_chunk=5), ref)


def test_relabel_consecutive_keeps_order_and_drops_absent():
    idx = torch.tensor([[4, 4, 1], [1, 6, 6]])
    labels, kept = relabel_consecutive(idx, 8)
    assert kept.tolist() == [1, 4, 6]
    assert labels.tolist() == [[1, 1, 0], [0, 2, 2]]
    assert labels.dtype == torch.int32
