"""ADMM saliency-grid pruning: exact L1-ball projection, sparse toy grid, hash-entry usage."""

import torch

from pruning.admm import ADMMConfig, ADMMPruner, SaliencyGrid, hash_usage, project_l1_ball


def test_l1_projection_exact_on_known_vectors():
    # Inside the ball: unchanged.
    v = torch.tensor([0.2, -0.3, 0.1])
    assert torch.equal(project_l1_ball(v, 1.0), v)
    # Worked example: |v| = (3, 1, 0.5), budget 2 -> theta = (3 + 1 - 2) / 2 = 1 -> (2, 0, 0)? check rho:
    # u = 3, 1, .5; css = 3, 4, 4.5; u_j - (css_j - 2)/j = 2, -0.0, -0.333 -> rho = 1, theta = 1.
    assert torch.allclose(project_l1_ball(torch.tensor([3.0, -1.0, 0.5]), 2.0), torch.tensor([2.0, 0.0, 0.0]))
    # Equal entries share the budget evenly.
    assert torch.allclose(project_l1_ball(torch.ones(4), 2.0), torch.full((4,), 0.5))
    # Signs kept; theta = (0.9 + 0.8 + 0.7 - 1.5) / 3 = 0.3.
    out = project_l1_ball(torch.tensor([0.9, -0.8, 0.7, 0.1]), 1.5)
    assert torch.allclose(out, torch.tensor([0.6, -0.5, 0.4, 0.0]), atol=1e-6)


def test_l1_projection_is_the_closest_point_in_the_ball():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(50, generator=g).double() * 3
        b = float(torch.rand(1, generator=g)) * 10 + 0.1
        p = project_l1_ball(v, b)
        assert float(p.abs().sum()) <= b + 1e-9
        # Any other point of the ball is no closer: compare against random feasible points and
        # the scaled-down point (the naive projection).
        d = float((p - v).norm())
        scaled = v * (b / float(v.abs().sum()))
        assert d <= float((scaled - v).norm()) + 1e-9
        for _ in range(20):
            q = torch.randn(50, generator=g).double()
            q = q * (b * float(torch.rand(1, generator=g)) / float(q.abs().sum()))
            assert d <= float((q - v).norm()) + 1e-9


def test_saliency_grid_samples_cell_values_at_centers():
    grid = SaliencyGrid(4)
    with torch.no_grad():
        grid.logits.copy_(torch.randn(4, 4, 4))
    idx = torch.tensor([[0, 1, 2], [3, 0, 1], [2, 2, 3]])
    x = (idx.float() + 0.5) / 4
    assert torch.allclose(grid(x), grid.saliency()[idx[:, 0], idx[:, 1], idx[:, 2]], atol=1e-6)


def test_admm_drives_toy_grid_sparse_under_budget():
    # Toy task: the "scene" needs saliency only in an 8-cell corner; elsewhere the data term is
    # indifferent (a weak pull toward 1, as feature gating would give). ADMM must prune the rest.
    torch.manual_seed(0)
    grid = SaliencyGrid(8, init_logit=2.0)
    need = torch.zeros(8, 8, 8, dtype=torch.bool)
    need[:2, :2, :2] = True
    budget_fraction = 16 / 512
    pruner = ADMMPruner(grid, ADMMConfig(budget_fraction=budget_fraction, rho=0.5, update_every=5, prune_threshold=0.1))
    opt = torch.optim.Adam(grid.parameters(), lr=0.1)
    for step in range(1, 601):
        s = grid.saliency()
        data = ((s[need] - 1.0) ** 2).sum() * 5.0 + 0.01 * ((s[~need] - 1.0) ** 2).sum()
        loss = data + pruner.penalty(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        pruner.step(step)
    s = grid.saliency().detach()
    kept = pruner.kept_cells()
    assert float(s.sum()) <= pruner.budget * 1.15, (float(s.sum()), pruner.budget)
    assert bool(kept[need].all())
    assert int(kept.sum()) <= 16
    assert float(pruner.Z.abs().sum()) <= pruner.budget + 1e-4


def test_hash_usage_dense_level_and_early_stop():
    kept = torch.zeros(4, 4, 4, dtype=torch.bool)
    kept[0, 0, 0] = True
    res = 8  # dense level with 9^3 vertices; kept cell [0, 1/4)^3 touches vertices 0..2 per axis.

    def dense(level, v):
        return v[:, 0] * 81 + v[:, 1] * 9 + v[:, 2]

    (used, size), = hash_usage(kept, [res], [729], dense)
    assert (used, size) == (27, 729)
    # A tiny hashed table is saturated: all entries used.
    (used2, size2), = hash_usage(kept, [res], [5], lambda l, v: (v[:, 0] * 31 + v[:, 1] * 17 + v[:, 2]) % 5)
    assert used2 == size2 == 5
    # Nothing kept: nothing used.
    assert hash_usage(torch.zeros_like(kept), [res], [729], dense) == [(0, 729)]


def _small_encoding():
    from reconstruct.nerf.hash_encoding import HashEncoding, HashGridConfig

    torch.manual_seed(0)
    enc = HashEncoding(HashGridConfig(n_levels=5, log2_hashmap_size=10, base_resolution=4, per_level_scale=2.0),
                       implementation="torch")
    with torch.no_grad():
        enc.params.normal_()
    return enc


def test_corner_index_matches_the_hash_encoding():
    from pruning.admm_nerf import corner_index
    from reconstruct.nerf.hash_encoding import level_corners

    enc = _small_encoding()
    x = torch.rand(500, 3)
    for level in range(5):
        idx, _ = level_corners(x, enc.layout, level)
        pos = torch.floor(x * float(enc.layout.scales[level]) + 0.5).long()
        from reconstruct.nerf.hash_encoding import _CORNERS

        corners = (pos[:, None, :] + torch.as_tensor(_CORNERS)[None]).reshape(-1, 3)
        assert torch.equal(corner_index(enc.layout, level, corners).reshape(-1, 8), idx)


def test_unused_entries_are_really_unused_and_gate_zeroes_pruned_space():
    from pruning.admm_nerf import GatedEncoding, active_cells, hash_entries_in_use, zero_unused_entries

    enc = _small_encoding()
    kept = torch.zeros(8, 8, 8, dtype=torch.bool)
    kept[2:4, 2:4, 2:4] = True
    active = active_cells(kept)
    assert int(active.sum()) == 4 ** 3
    usage = hash_entries_in_use(enc, active)
    assert 0 < usage["used_params"] < usage["total_params"]
    assert any(p["used"] < p["size"] for p in usage["per_level"] if p["dense"])
    # Points anywhere inside the active cells encode identically once the unused entries are zeroed.
    cells = torch.nonzero(active).float()
    x = (cells[torch.randint(len(cells), (2000,))] + torch.rand(2000, 3)) / 8
    before = enc(x)
    zeroed = zero_unused_entries(enc, active)
    assert zeroed * enc.config.features_per_level == usage["droppable_params"]
    assert torch.allclose(enc(x), before, atol=0, rtol=0)
    # The gate passes kept space (saliency ~1) and silences pruned space (logit -30).
    grid = SaliencyGrid(8)
    with torch.no_grad():
        grid.logits.fill_(30.0)
    grid.prune(kept)
    gated = GatedEncoding(enc, grid)
    inside = (torch.tensor([[2.5, 2.5, 2.5]]) + 0.5) / 8
    far = torch.tensor([[0.05, 0.05, 0.95]])
    assert torch.allclose(gated(inside), enc(inside), atol=1e-6)
    assert torch.all(gated(far) == 0)
