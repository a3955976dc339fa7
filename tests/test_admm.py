"""ADMM saliency-grid pruning: exact L1-ball projection, sparse toy grid, hash-entry usage."""

import numpy as np
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


def test_fold_table_copies_same_size_and_averages_the_used_entries():
    from pruning.admm_nerf import active_cells, corner_index, fold_table, used_entries
    from reconstruct.nerf.hash_encoding import HashEncoding, HashGridConfig

    src = _small_encoding()  # levels 0-1 dense (64, 512 entries), 2-4 hashed in 1024 entries
    kept = torch.zeros(8, 8, 8, dtype=torch.bool)
    kept[2:4, 2:4, 2:4] = True
    active = active_cells(kept)
    same = HashEncoding(src.config, implementation="torch")
    fold_table(src, same, active)
    assert torch.allclose(same.params, src.params, rtol=1e-6, atol=1e-7)

    small_cfg = HashGridConfig(n_levels=5, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)
    small = HashEncoding(small_cfg, implementation="torch")
    fold_table(src, small, active)
    used = used_entries(src, active)
    s_tab, d_tab = src.params.view(-1, 2), small.params.view(-1, 2)
    # Hashed level: destination j is the mean of the used source entries j, j + 256, j + 512, j + 768.
    level = 3
    s_lo, d_lo = int(src.layout.offsets[level]), int(small.layout.offsets[level])
    checked = 0
    for j in range(256):
        members = torch.arange(j, 1024, 256)
        m = members[used[level][members]]
        if len(m) == 0:
            continue
        assert torch.allclose(d_tab[d_lo + j], s_tab[s_lo + m].mean(0), rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked > 50
    # A level dense in src but hashed in dst: an entry reached from a single used source entry is a copy.
    level = 1
    assert src.layout.dense[level] and not small.layout.dense[level]
    r = int(src.layout.resolutions[level])
    ar = torch.arange(r + 1)
    v = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3)
    si, di = corner_index(src.layout, level, v), corner_index(small.layout, level, v)
    s_lo, d_lo = int(src.layout.offsets[level]), int(small.layout.offsets[level])
    ok = used[level][si]
    singles = 0
    for j in torch.unique(di[ok]).tolist():
        sources = torch.unique(si[ok & (di == j)])
        if len(sources) == 1:
            assert torch.allclose(d_tab[d_lo + j], s_tab[s_lo + sources[0]], rtol=1e-4, atol=1e-5)
            singles += 1
    assert singles > 10


def _tiny_nerf_run(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scene_fixtures import train_run, write_blender

    from reconstruct.config import NerfTrainConfig
    from reconstruct.nerf.config import NerfConfig

    root, run = tmp_path / "scene", tmp_path / "run"
    write_blender(root, n_train=5, n_test=2, size=16)
    ncfg = NerfConfig(rays_per_batch=128, n_samples=32, log2_hashmap_size=10, n_levels=4, max_resolution=64,
                      grid_resolution=16)
    assert train_run(NerfTrainConfig(scene=root, views=None, iters=20, nerf=ncfg), run) == 0
    return run


def test_compress_admm_on_a_nerf_run_shrinks_the_table_and_reports(tmp_path, capsys):
    import json

    from pruning.admm_nerf import AdmmNerfConfig, compress_nerf_run
    from recon.cli import main
    from reconstruct.run import Run

    run = _tiny_nerf_run(tmp_path)
    assert main(["compress", str(run), "--admm", "--admm-steps", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Every level is hashed at 2^10 entries: the compressed table is exactly 4x smaller.
    assert out["hash_params_total"] * 4 == out["hash_params_run"]
    assert out["hash_params_in_use"] <= out["hash_params_total"]
    assert abs(out["fraction_in_use"] - out["hash_params_in_use"] / out["hash_params_run"]) < 1e-12
    assert 0 < out["cells_kept"] <= out["cells_total"]
    for k in ("psnr_before", "psnr_after", "ssim_before", "ssim_after"):
        assert np.isfinite(out[k])
    # The saved field decodes back to what was scored.
    from pruning.admm_nerf import load_compressed_nerf
    from reconstruct.nerf.method import evaluate_nerf

    field, occ, n_samples = load_compressed_nerf(Run.open(run))
    assert n_samples == 32
    again = evaluate_nerf(field, occ, Run.open(run).scene(), n_samples=n_samples)
    assert abs(again["psnr"] - out["psnr_after"]) < 1e-4
    assert main(["eval", str(run), "--compressed", "--json"]) == 0
    assert abs(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["psnr"] - out["psnr_after"]) < 1e-4
    saved = torch.load(run / "compressed" / "saliency.pt", weights_only=True)
    assert saved["field"]["encoding.inner.params"].numel() == out["hash_params_total"]
    assert saved["field_config"]["grid"]["log2_hashmap_size"] == 8
    # The control: same smaller table and steps, no gate: nothing pruned, the whole table in use.
    ctrl = compress_nerf_run(Run.open(run), progress=False, cfg=AdmmNerfConfig(steps=6, gate=False))
    assert ctrl["cells_kept"] == ctrl["cells_total"] and ctrl["hash_params_in_use"] == ctrl["hash_params_total"]
    assert ctrl["hash_params_total"] == out["hash_params_total"]
    # A shrink the run's table cannot take: one line naming the run, exit 1, nothing written.
    import shutil

    shutil.rmtree(run / "compressed")
    assert main(["compress", str(run), "--admm", "--admm-table-shrink", "9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run) in err[0] and "table-shrink" in err[0]
    assert not (run / "compressed").exists()
