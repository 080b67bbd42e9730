import numpy as np
import pytest
import torch

from diffseg_core.aggregate import aggregate, layer_grid
from diffseg_core.config import MergeConfig
from diffseg_core.pipeline import segment_aggregated, segment_from_attention
from tests.diffseg_core.attention_fixtures import region_attention

# 8x8 latent, three regions: left half, top-right, bottom-right.
REGIONS = np.array([[0] * 4 + [1] * 4] * 4 + [[0] * 4 + [2] * 4] * 4)


def test_three_blobs_give_exactly_three_segments():
    fine = region_attention(REGIONS)
    coarse = region_attention(REGIONS[::2, ::2], seed=1)  # the same layout at 4x4
    seg = segment_from_attention([fine, coarse], out_size=(16, 16))
    # Anchor order is row-major, so the left region (hit first) is 0, then top-right, bottom-right.
    expected = np.kron(np.array([[0, 1], [0, 2]]), np.ones((8, 8), dtype=np.int32))
    np.testing.assert_array_equal(seg.labels, expected)
    assert seg.labels.dtype == np.int32
    assert seg.proposals.shape == (3, 8, 8) and seg.proposals.dtype == np.float32
    np.testing.assert_allclose(seg.proposals.sum((1, 2)), 1.0, rtol=1e-5)
    masks = seg.masks()
    assert masks.shape == (3, 16, 16) and masks.sum() == 256


def test_noisy_heads_and_refinement_keep_the_partition():
    fine = region_attention(REGIONS, heads=4, noise=0.3, seed=3)
    for refine in (False, True):
        seg = segment_from_attention([fine], refine=refine, out_size=(8, 8))
        np.testing.assert_array_equal(seg.labels, np.array([[0, 0, 0, 0, 1, 1, 1, 1]] * 4 + [[0, 0, 0, 0, 2, 2, 2, 2]] * 4))


def test_non_square_latent():
    regions = np.zeros((8, 12), int)
    regions[:, 6:] = 1
    regions[5:, :3] = 2
    seg = segment_from_attention([region_attention(regions)], latent_hw=(8, 12), out_size=(8, 12))
    assert seg.num_segments == 3
    for k in range(3):
        assert len(np.unique(seg.labels[regions == k])) == 1
    assert len(np.unique([seg.labels[regions == k][0] for k in range(3)])) == 3


def test_layer_grid_follows_unet_levels():
    assert layer_grid(64 * 112, (64, 112)) == (64, 112)
    assert layer_grid(16 * 28, (64, 112)) == (16, 28)
    assert layer_grid(4, (3, 3)) == (2, 2)  # ceil halving
    with pytest.raises(ValueError, match="not a level"):
        layer_grid(50, (64, 64))


def test_aggregate_tiles_queries_and_normalises():
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 4, 4, generator=g)
    coarse = coarse / coarse.sum(-1, keepdim=True)
    out = aggregate([coarse], [(2, 2)], (4, 4))
    assert out.shape == (1, 16, 4, 4)
    torch.testing.assert_close(out.sum((-2, -1)), torch.ones(1, 16))
    q = out[0].reshape(4, 4, 4, 4)
    torch.testing.assert_close(q[0, 0], q[1, 1])  # same coarse parent -> same map
    assert not torch.allclose(q[0, 0], q[0, 2])


def test_segment_aggregated_defaults_to_eight_times_the_latent():
    att = torch.from_numpy(region_attention(REGIONS, heads=1)[0]).reshape(64, 8, 8)
    seg = segment_aggregated(att, MergeConfig())
    assert seg.labels.shape == (64, 64) and seg.image_hw == (64, 64)


@pytest.mark.parametrize("bad, match", [
    (np.full((1, 16, 16), np.nan, np.float32), "NaN"),
    (-np.ones((1, 16, 16), np.float32) / 16, "negative"),
    (np.ones((1, 16, 16), np.float32), "sum to 1"),
    (np.ones((1, 16, 15), np.float32), "heads, N, N"),
    (np.ones((12, 12), np.float32) / 12, "not square"),
])
def test_bad_attention_is_refused_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match):
        segment_from_attention([bad])


def test_merge_config_validates():
    with pytest.raises(ValueError, match="kl_threshold"):
        MergeConfig(kl_threshold=(1.1, -1.0))
    assert MergeConfig(kl_threshold=0.9).kl_threshold == (0.9, 0.9, 0.9)
    assert MergeConfig.from_dict(MergeConfig(grid=8).to_dict()) == MergeConfig(grid=8)


def _aggregate_by_definition(maps, shapes, hw):
    """Each level on its own: keys upsampled (bilinear) and renormalised, queries tiled by
    nearest parent, weighted by the level's side."""
    import torch.nn.functional as F

    h, w = hw
    sides = [np.sqrt(a * b) for a, b in shapes]
    out = torch.zeros(maps[0].shape[0], h * w, h, w, dtype=torch.float64)
    for m, (hr, wr), side in zip(maps, shapes, sides):
        keys = F.interpolate(m.double().reshape(-1, 1, hr, wr), size=(h, w), mode="bilinear", align_corners=False)
        keys = (keys / keys.sum((-2, -1), keepdim=True)).reshape(m.shape[0], hr, wr, h * w)
        iy, ix = np.arange(h) * hr // h, np.arange(w) * wr // w
        tiled = keys[:, iy][:, :, ix].reshape(m.shape[0], h * w, h, w)
        out += tiled * (side / sum(sides))
    return out


@pytest.mark.parametrize("hw,shapes", [((8, 8), [(8, 8), (4, 4), (2, 2), (1, 1)]),
                                       ((6, 10), [(6, 10), (3, 5), (2, 3)])])  # (2, 3): ceil halving
def test_aggregate_equals_its_definition_level_by_level(hw, shapes):
    g = torch.Generator().manual_seed(5)
    maps = []
    for hr, wr in shapes:
        m = torch.rand(2, hr * wr, hr * wr, generator=g) ** 3
        maps.append(m / m.sum(-1, keepdim=True))
    ref = _aggregate_by_definition(maps, shapes, hw)
    got = aggregate([m.clone() for m in maps], shapes, hw)
    torch.testing.assert_close(got.double(), ref, atol=1e-6, rtol=1e-5)
    given = [m.clone() for m in maps]
    own = aggregate(given, shapes, hw, inplace=True)  # the finest map becomes the result
    torch.testing.assert_close(own, got)
    assert own.data_ptr() == given[0].data_ptr()
    kept = [m.clone() for m in maps]
    aggregate(kept, shapes, hw)
    assert all(torch.equal(a, b) for a, b in zip(kept, maps))  # without inplace: inputs untouched


def test_peaky_attention_with_exact_zeros_still_gives_segments():
    """Attention that underflows to exact zeros (peaky maps; float16 softmax on a GPU) used to
    lose every proposal in the float64 iterations (log 0 -> NaN, as in the original), and the
    NMS then failed on an empty proposal set. The float32 fallback keeps them."""
    h = w = 16
    yy, xx = np.mgrid[:h, :w]
    left = (xx < 8).ravel()
    maps = np.zeros((h * w, h, w), np.float32)
    for q in range(h * w):  # each query looks at a few pixels of its own half only, zeros elsewhere
        side = left if left[q] else ~left
        idx = np.flatnonzero(side)[(q * 7) % 64: (q * 7) % 64 + 4]
        maps[q].reshape(-1)[idx] = 0.25
    with pytest.warns(RuntimeWarning, match="float16 merge dropped"):
        seg = segment_aggregated(torch.from_numpy(maps), MergeConfig(), out_size=(64, 64))
    assert seg.num_segments >= 1 and seg.labels.shape == (64, 64)
    assert np.isfinite(seg.proposals).all()
