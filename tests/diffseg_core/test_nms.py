import numpy as np
import torch
import torch.nn.functional as F

from diffseg_core.nms import compact_dtype, interp_matrix, relabel_consecutive, upsample_argmax


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


def test_compact_labels_are_the_same_labels_in_a_narrower_type():
    g = torch.Generator().manual_seed(2)
    for k, dtype in [(6, torch.uint8), (300, torch.int16)]:
        p = torch.rand(k, 9, 7, generator=g)
        ref, ref_kept = relabel_consecutive(upsample_argmax(p, (45, 33)), k)
        got, kept = relabel_consecutive(upsample_argmax(p, (45, 33), row_chunk=4, dtype=compact_dtype(k)), k)
        assert got.dtype == dtype and ref.dtype == torch.int32
        assert torch.equal(got.to(torch.int32), ref) and torch.equal(kept, ref_kept)
        assert int(got.max()) + 1 <= torch.iinfo(dtype).max  # room for the 1..K ids of files
    assert compact_dtype(255) == torch.uint8 and compact_dtype(256) == torch.int16
    assert compact_dtype(40000) == torch.int32


def test_segment_aggregated_compact_labels_match_int32():
    from diffseg_core.config import MergeConfig
    from diffseg_core.pipeline import segment_aggregated

    g = torch.Generator().manual_seed(3)
    maps = torch.rand(64, 8, 8, generator=g) ** 3
    maps = maps / maps.sum(dim=(1, 2), keepdim=True)
    a = segment_aggregated(maps, MergeConfig(grid=4), out_size=(70, 50))
    b = segment_aggregated(maps, MergeConfig(grid=4), out_size=(70, 50), compact_labels=True)
    assert a.labels.dtype == np.int32 and b.labels.dtype == np.uint8 and a.num_segments > 1
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.proposals, b.proposals)


def test_upsample_argmax_ties_go_to_the_lowest_index():
    p = torch.zeros(5, 4, 4)
    p[1, :2] = 1.0
    p[3] = 1.0  # equal to proposal 1 on the top half: 1 wins there, 3 elsewhere
    out = upsample_argmax(p, (8, 8), row_chunk=3)
    ref = F.interpolate(p[None], size=(8, 8), mode="bilinear", align_corners=False)[0]
    first = (ref == ref.max(0).values).int().argmax(0)  # lowest index among the maxima
    assert torch.equal(out.long(), first.long()) and set(out.unique().tolist()) == {1, 3}
