import numpy as np
import torch

from diffseg_core.merge import (anchor_grid, axis_anchor_positions, iterative_merge, merge_anchors,
                                merge_greedy, sym_kl_matrix)


def _rand_dists(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=g, dtype=torch.float64) + 1e-3
    return x / x.sum(1, keepdim=True)


def _kl_elementwise(a, b):
    q = torch.log(a)[:, None, :] - torch.log(b)[None, :, :]
    return 0.5 * ((a[:, None, :] - b[None, :, :]) * q).sum(-1)


def test_sym_kl_matches_definition_and_properties():
    a, b = _rand_dists(7, 50, 0), _rand_dists(11, 50, 1)
    got = sym_kl_matrix(a, b, chunk=4)  # chunking over b must not matter
    assert torch.allclose(got, _kl_elementwise(a, b), atol=1e-12)
    aa = sym_kl_matrix(a, a)
    assert torch.allclose(aa, aa.T, atol=1e-12)
    assert torch.allclose(torch.diagonal(aa), torch.zeros(7, dtype=aa.dtype), atol=1e-12)
    assert (got > -1e-12).all()


def test_sym_kl_zero_entries_give_nan_like_the_original():
    a = _rand_dists(3, 20, 2)
    b = _rand_dists(4, 20, 3)
    b[2, 5] = 0.0
    kl = sym_kl_matrix(a, b, nan_on_zero=True)
    assert torch.isnan(kl[:, 2]).all()
    assert torch.isfinite(kl[:, [0, 1, 3]]).all()
    assert torch.isfinite(sym_kl_matrix(a, b, eps=1e-12)).all()


def test_anchor_positions_match_the_original_grid():
    assert axis_anchor_positions(64, 16) == list(range(1, 62, 4))
    assert axis_anchor_positions(5, 16) == [0, 1, 2, 3, 4]
    idx = anchor_grid((64, 64), 16)
    assert idx.shape == (256,)
    assert idx[0] == 1 * 64 + 1 and idx[1] == 1 * 64 + 5 and idx[16] == 5 * 64 + 1


def test_anchor_grid_keeps_square_spacing_on_wide_latents():
    idx = anchor_grid((64, 112), 16)  # a 16:9-ish frame
    rows, cols = np.unique(idx.numpy() // 112), np.unique(idx.numpy() % 112)
    assert len(rows) == 16 and len(cols) == 28
    assert cols.min() >= 0 and cols.max() < 112


def test_merge_anchors_groups_identical_maps():
    base = torch.softmax(4 * torch.randn(3, 16, generator=torch.Generator().manual_seed(4),
                                          dtype=torch.float64), 1)
    assert (sym_kl_matrix(base, base) + 10 * torch.eye(3, dtype=base.dtype) > 1.1).all()
    maps = base[torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])]  # 8 queries, 3 distinct maps
    merged = merge_anchors(maps.float(), torch.tensor([0, 2, 4]), 1.1, faithful_fp16=False)
    assert merged.shape == (3, 16)
    assert torch.allclose(merged.double(), base, atol=1e-6)


def test_faithful_merge_drops_anchors_that_underflow_float16():
    maps = _rand_dists(4, 16, 5).float()
    maps[1, 3] = 1e-9  # flushes to zero in float16 -> NaN KL -> anchor vanishes
    maps[1] /= maps[1].sum()
    merged = merge_anchors(maps, torch.tensor([0, 1, 2]), 50.0, faithful_fp16=True)
    assert merged.shape[0] == 2
    merged32 = merge_anchors(maps, torch.tensor([0, 1, 2]), 50.0, faithful_fp16=False)
    assert merged32.shape[0] == 3


def test_merge_greedy_lets_merged_maps_join_later_groups():
    # 0~1 close, 1~2 close, 0 and 2 far: greedy from 0 takes {0,1}; 2 is not merged yet, so it
    # starts its own group and pulls 1 in again (the original's behaviour).
    p = torch.tensor([[0.90, 0.05, 0.05], [0.60, 0.35, 0.05], [0.20, 0.75, 0.05]], dtype=torch.float64)
    kl = sym_kl_matrix(p, p)
    thr = float((kl[0, 1] + kl[0, 2]) / 2)
    assert kl[0, 1] < thr and kl[1, 2] < thr and kl[0, 2] > thr
    out = merge_greedy(p, thr)
    assert out.shape == (2, 3)
    assert torch.allclose(out[0], (p[0] + p[1]) / 2)
    assert torch.allclose(out[1], (p[1] + p[2]) / 2)


def test_iterative_merge_recovers_blocks():
    from tests.diffseg_core.attention_fixtures import region_attention

    regions = np.repeat(np.repeat(np.array([[0, 1], [2, 2]]), 4, 0), 4, 1)  # 8x8
    att = torch.from_numpy(region_attention(regions, heads=1)[0]).reshape(64, 8, 8)
    props = iterative_merge(att, (8, 8))
    assert props.shape == (3, 8, 8)
    assert torch.allclose(props.sum((1, 2)), torch.ones(3, dtype=props.dtype))
    # each proposal puts most of its mass on one region
    winners = sorted(int(np.bincount(regions.ravel(), weights=p.numpy().ravel()).argmax()) for p in props)
    assert winners == [0, 1, 2]


def test_float16_kl_paths_are_symmetric_kl_within_float16_rounding():
    # Asymmetric pairs (KL(a||b) != KL(b||a)): the faithful float16 path must still give the
    # symmetric divergence, as matrix products and as the elementwise recheck.
    from diffseg_core.merge import _r16, fp16_kl_pairs

    a = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]], dtype=torch.float32)
    b = torch.tensor([[0.1, 0.3, 0.6], [0.98, 0.01, 0.01]], dtype=torch.float32)
    exact = _kl_elementwise(a.double(), b.double()).float()
    one_way = (a[:, None, :] * (torch.log(a)[:, None, :] - torch.log(b)[None, :, :])).sum(-1)
    assert (one_way - exact).abs().max() > 0.1  # the fixture tells the two apart
    got = sym_kl_matrix(_r16(a), b, nan_on_zero=True)  # as merge_anchors calls it
    torch.testing.assert_close(got, exact, atol=5e-3, rtol=5e-3)
    a16, b16 = _r16(a), _r16(b)
    pairs = fp16_kl_pairs(a16, b16, _r16(torch.log(a16)), _r16(torch.log(b16)))
    torch.testing.assert_close(pairs, torch.diagonal(exact), atol=5e-3, rtol=5e-3)
