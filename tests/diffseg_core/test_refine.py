import torch

from diffseg_core.refine import kmeans_lloyd, refine_proposals


def test_kmeans_recovers_separated_clusters_from_poor_init():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    truth = torch.arange(3).repeat_interleave(40)
    x = centers[truth] + 0.5 * torch.randn(120, 2, generator=g, dtype=torch.float64)
    init = x[[0, 1, 41]]  # two seeds in cluster 0, one in cluster 1, none in cluster 2
    labels = kmeans_lloyd(x, init)
    # the partition equals the truth up to renaming
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth)}
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3


def test_kmeans_result_is_a_fixed_point():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    labels = kmeans_lloyd(x, x[:4])
    means = torch.stack([x[labels == k].mean(0) for k in range(4)])
    d = torch.cdist(x, means)
    assert torch.equal(d.argmin(1), labels)


def test_refine_proposals_returns_distributions():
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(16, 4, 4, generator=g)
    maps = maps / maps.sum((1, 2), keepdim=True)
    out = refine_proposals(maps, maps[[0, 5, 10]])
    assert out.shape[1:] == (4, 4) and 1 <= out.shape[0] <= 3
    assert torch.allclose(out.sum((1, 2)), torch.ones(out.shape[0], dtype=out.dtype))
