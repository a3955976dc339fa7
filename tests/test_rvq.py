"""k-means and residual vector quantization: error bounds, STE, EMA."""

import torch

from pruning.rvq import Codebook, ResidualVQ, canonical_quats, kmeans


def _data(n=3000, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    # A mixture: clustered plus a heavy spread, like log scales.
    centers = torch.randn(12, d, generator=g) * 2
    x = centers[torch.randint(12, (n,), generator=g)] + 0.3 * torch.randn(n, d, generator=g)
    return x


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = centers.repeat_interleave(200, 0) + 0.1 * torch.randn(800, 2, generator=g)
    c, assign = kmeans(x, 4, iters=20, seed=0)
    dist = torch.cdist(c, centers).min(1).values
    assert torch.all(dist < 0.1), c
    assert len(set(assign.tolist())) == 4


def test_rvq_error_never_increases_with_stages_and_matches_kmeans_at_one_stage():
    x = _data()
    rvq = ResidualVQ.fit(x, stages=6, entries=16, iters=15)
    errors = [float((x ** 2).sum(1).mean())] + [rvq.mse(x, stages=s) for s in range(1, 7)]
    for a, b in zip(errors, errors[1:]):
        assert b <= a * (1 + 1e-5), errors
    assert errors[-1] < 0.2 * errors[1], errors
    # One stage is plain k-means with the same seed: identical distortion.
    c, assign = kmeans(x, 16, iters=15, seed=0)
    km = float(((x - c[assign]) ** 2).sum(1).mean())
    assert abs(errors[1] - km) <= 1e-4 * km
    # Six stages of 16 entries beat a single 64-entry k-means on this data.
    c64, a64 = kmeans(x, 64, iters=15, seed=0)
    assert errors[-1] < float(((x - c64[a64]) ** 2).sum(1).mean())


def test_rvq_decode_is_sum_of_entries_and_ste_passes_gradient():
    x = _data(500, 4).requires_grad_(True)
    rvq = ResidualVQ.fit(x.detach(), stages=3, entries=8, iters=5)
    q, codes = rvq.quantize_ste(x)
    assert codes.shape == (3, 500)
    manual = sum(rvq.codebooks[s][codes[s]] for s in range(3))
    assert torch.allclose(q.detach(), manual, atol=1e-6)
    (q * torch.arange(4.0)).sum().backward()
    assert torch.allclose(x.grad, torch.arange(4.0).expand(500, 4))


def test_ema_update_reduces_error_after_drift():
    x = _data(2000, 3)
    rvq = ResidualVQ.fit(x, stages=2, entries=16, iters=10)
    drifted = x + 0.5
    before = rvq.mse(drifted)
    for _ in range(20):
        rvq.ema_update(drifted, rvq.encode(drifted), decay=0.5)
    assert rvq.mse(drifted) < 0.5 * before


def test_codebook_vq_and_quaternion_canonical_form():
    x = _data(1000, 6)
    book = Codebook.fit(x, entries=32, iters=10)
    err = float(((book.decode() - x) ** 2).sum(1).mean())
    assert err < 0.1 * float(((x - x.mean(0)) ** 2).sum(1).mean())
    q = torch.tensor([[-1.0, 0.0, 0.0, 0.0], [0.5, 0.5, -0.5, 0.5], [-2.0, 2.0, 0.0, 0.0]])
    cq = canonical_quats(q)
    assert torch.all(cq[:, 0] >= 0) and torch.allclose(cq.norm(dim=1), torch.ones(3))
    assert torch.allclose(cq[2], torch.tensor([1.0, -1.0, 0.0, 0.0]) / 2 ** 0.5)
