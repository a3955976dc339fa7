"""`recon compress` pipeline on a tiny in-memory scene: masks remove useless Gaussians, codebooks
shrink the artifact, the decoded artifact is what gets scored."""

import json
from pathlib import Path

import numpy as np

from pruning.artifact import CompactSplats, load_artifact, save_artifact
from pruning.compress import JSON_KEYS, CompressConfig, compress_splats
from pruning.quantize import QuantizeConfig, morton_order
from reconstruct.splats import Splats
from scenes.geometry import look_at
from scenes.types import SceneData

H = W = 32


def _gt_splats(n: int, seed: int = 0, useless: int = 0) -> Splats:
    r = np.random.default_rng(seed)
    means = r.uniform(-0.6, 0.6, (n, 3))
    log_scales = np.log(r.uniform(0.06, 0.15, (n, 3)))
    opac = np.full(n, 2.0)
    if useless:  # nearly transparent, tiny: they contribute nothing visible
        means = np.concatenate([means, r.uniform(-0.6, 0.6, (useless, 3))])
        log_scales = np.concatenate([log_scales, np.full((useless, 3), np.log(0.01))])
        opac = np.concatenate([opac, np.full(useless, -6.0)])
    m = len(means)
    return Splats(
        means=means.astype(np.float32), quats=r.normal(size=(m, 4)).astype(np.float32),
        log_scales=log_scales.astype(np.float32), opacity_logits=opac.astype(np.float32),
        sh0=r.normal(0, 1.2, (m, 3)).astype(np.float32), shN=(0.05 * r.normal(size=(m, 3, 3))).astype(np.float32),
    )


def _scene(gt: Splats) -> SceneData:
    from reconstruct.evaluate import render_splats

    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    Ts = np.stack([look_at([2.5 * np.cos(a), 2.5 * np.sin(a), 0.8], [0.0, 0.0, 0.0]) for a in angles])
    K = np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    scene = SceneData(format="blender", root=Path("."), image_paths=(), Ks=np.stack([K] * 8), T_world_cam=Ts,
                      width=W, height=H, train_ids=(0, 1, 2, 3, 5, 6), test_ids=(4, 7), near=0.5, far=5.0,
                      background=(1.0, 1.0, 1.0))
    cache = {}

    def loader(i: int) -> np.ndarray:
        if i not in cache:
            cache[i] = render_splats(gt, scene, i)[0].numpy().astype(np.float32)
        return cache[i]

    object.__setattr__(scene, "loader", loader)
    return scene


def test_masks_remove_useless_gaussians_and_keep_quality(tmp_path):
    gt = _gt_splats(60, useless=140)
    scene = _scene(gt)
    cfg = CompressConfig(masks=True, quantize=False, mask_steps=60, mask_lambda=0.05, mask_lr=0.25,
                         mask_prune_every=20, progress=False, export_compressed_ply=False, device="cpu")
    report = compress_splats(gt, scene, tmp_path, cfg)
    assert report["n_before"] == 200
    assert report["n_after"] <= 100, report["n_after"]  # most of the 140 invisible ones are gone
    assert report["psnr_before"] > 40  # rendered from the same splats
    assert report["psnr_after"] > 30, report["psnr_after"]
    decoded = load_artifact(tmp_path)
    assert len(decoded) == report["n_after"]


def test_codebooks_shrink_artifact_and_decode_close(tmp_path):
    gt = _gt_splats(300, seed=1)
    scene = _scene(gt)
    q = QuantizeConfig(scale_stages=2, scale_entries=16, rot_stages=2, rot_entries=16, sh0_entries=64,
                       shN_entries=16, kmeans_iters=5)
    cfg = CompressConfig(masks=False, quantize=True, quantize_steps=30, codebooks="rvq", quant=q, progress=False,
                         export_compressed_ply=False, device="cpu")
    report = compress_splats(gt, scene, tmp_path / "q", cfg)
    raw_bytes = save_artifact(tmp_path / "raw", CompactSplats.from_splats(gt))
    assert report["artifact_bytes"] < 0.6 * raw_bytes, (report["artifact_bytes"], raw_bytes)
    assert report["psnr_before"] == float("inf") or report["psnr_before"] > 60  # the gt itself
    assert report["psnr_after"] > 20, report["psnr_after"]
    # The input splats are not modified by the fine-tuning.
    assert np.array_equal(gt.means, _gt_splats(300, seed=1).means)
    assert set(JSON_KEYS) - {"ply_bytes"} <= set(report)
    json.dumps(report)  # the report is plain JSON
    # scene.sog is written from the decoded artifact and read back by our reader: a player shows about the same
    from pruning.formats import read_splats

    sog = read_splats(tmp_path / "q" / "scene.sog")
    assert len(sog) == len(load_artifact(tmp_path / "q")) and report["sog_bytes"] == (tmp_path / "q" / "scene.sog").stat().st_size
    assert report["psnr_sog"] > report["psnr_after"] - 3.0, (report["psnr_sog"], report["psnr_after"])


def test_morton_order_is_a_permutation_that_groups_neighbours():
    r = np.random.default_rng(0)
    pts = r.uniform(size=(4000, 3))
    order = morton_order(pts)
    assert sorted(order.tolist()) == list(range(4000))
    step = np.linalg.norm(np.diff(pts[order], axis=0), axis=1).mean()
    assert step < 0.25 * np.linalg.norm(np.diff(pts, axis=0), axis=1).mean()


def test_cli_bad_run_folder_is_one_line_error(tmp_path, capsys):
    from recon.cli import main

    assert main(["compress", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "config.json" in err[0]


def test_rate_distortion_plot_is_written(tmp_path):
    from recon.bench.compress import plot

    results = {"ply_bytes": 2_000_000, "psnr_before": 20.0, "n_test": 3, "steps": 10, "points": [
        {"lambda": lam, "variant": v, "artifact_bytes": b, "psnr": p}
        for lam, v, b, p in [(0, "float16", 500_000, 19.9), (0, "codebook 256", 100_000, 19.5),
                             (5e-4, "float16", 300_000, 19.8), (5e-4, "codebook 256", 60_000, 19.3)]]}
    plot(results, tmp_path / "rd.png")
    data = (tmp_path / "rd.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_nerf_pruning_plot_is_written(tmp_path):
    from recon.bench.compress_nerf import plot

    rows = [{"variant": v, "table_shrink": k, "gate": g, "hash_params_in_use": n, "psnr_after": p}
            for v, k, g, n, p in [("fine-tune", 0, False, 2_400_000, 21.0), ("gate+ADMM", 0, True, 2_100_000, 21.1),
                                  ("fine-tune, table/4", 2, False, 660_000, 20.6),
                                  ("gate+ADMM, table/4", 2, True, 580_000, 20.7)]]
    plot({"steps": 10, "psnr_run": 20.9, "hash_params_run": 2_468_752, "rows": rows}, tmp_path / "nerf.png")
    data = (tmp_path / "nerf.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_cli_defaults_are_the_compress_configs():
    """`recon compress` restates CompressConfig's defaults for tyro; they must stay the same values."""
    import dataclasses

    from pruning.compress import CompressConfig
    from recon.commands import CompressCommand

    lib = {f.name: f.default for f in dataclasses.fields(CompressConfig)}
    cli = {f.name: f.default for f in dataclasses.fields(CompressCommand)}
    shared = sorted(set(lib) & set(cli) - {"masks", "quantize", "admm"})  # the CLI's flags pick phases
    assert {"mask_lambda", "mask_steps", "teacher_views", "mask_lr", "quantize_steps", "lr_scale"} <= set(shared)
    assert {k: cli[k] for k in shared} == {k: lib[k] for k in shared}
