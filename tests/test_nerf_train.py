"""NeRF training on a tiny self-written Blender scene: learning, run folder, resume, CLI, export."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_fixtures import train_run, write_blender  # noqa: E402

from reconstruct.nerf.config import NerfConfig  # noqa: E402

TINY = NerfConfig(rays_per_batch=128, n_samples=32, log2_hashmap_size=10, n_levels=4, max_resolution=64,
                  grid_resolution=16, regularize="on", freq_reg_fraction=0.3, freq_reg_start_levels=2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch/numba thread: on a shared, loaded 2-core machine, spinning OpenMP workers of two
    thread pools starve each other (10x slower steps); the tiny problems here gain nothing from two."""
    import numba

    old = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(old[0])
    numba.set_num_threads(old[1])


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nerf") / "scene"
    write_blender(root, n_train=5, n_test=2, size=16)
    return root


def _cfg(scene_dir: Path, iters: int, out: Path, ncfg: NerfConfig = TINY):
    from reconstruct.config import NerfTrainConfig, OutputConfig

    return NerfTrainConfig(scene=scene_dir, views=None, iters=iters, nerf=ncfg,
                           output=OutputConfig(out=out, checkpoint_every=5, log_every=5))


def _train(scene_dir: Path, run: Path, iters: int, *, resume: bool = False, ncfg: NerfConfig = TINY) -> int:
    return train_run(_cfg(scene_dir, iters, run, ncfg), run, resume=resume)


def test_training_learns_and_writes_the_run_folder(scene_dir, tmp_path):
    run = tmp_path / "run"
    assert _train(scene_dir, run, 30) == 0
    for name in ("checkpoint.pt", "metrics.json", "history.json", "grid.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "nerf" and metrics["n_test"] == 2 and metrics["iters"] == 30
    # the fixture frames are not multi-view consistent (red = frame index): only check the numbers exist
    assert np.isfinite(metrics["psnr"]) and -1 <= metrics["ssim"] <= 1
    assert len(list((run / "renders").glob("test_*.png"))) == 2
    hist = json.loads((run / "history.json").read_text())
    assert hist[-1]["psnr"] > hist[0]["psnr"] + 1.0  # the fit improves on the training rays
    assert {"occ", "s3im"} <= set(hist[-1])  # sparse-view regularizers active
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["method"] == "nerf" and ckpt["step"] == 30 and ckpt["version"] == 2


def test_resume_continues_exactly(scene_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    import scenes
    from reconstruct.config import resolve
    from reconstruct.loop import LoopState, train_loop
    from reconstruct.run import Run
    from reconstruct.training import build_method

    _train(scene_dir, straight, 12)
    # the same 12-step run stopped after 6 steps (checkpoint written there), then resumed by `recon train --resume`
    cfg = resolve(_cfg(scene_dir, 12, split), device_type="cpu")
    run = Run.create(split, overwrite=True)
    run.save_config(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    method = build_method(cfg, scenes.load_scene(scene_dir), torch.device("cpu"), cache_dir=None)
    train_loop(method, LoopState(), until=6, save=run.save_checkpoint, show_progress=False)
    del method
    _train(scene_dir, split, 12, resume=True)
    a = torch.load(straight / "checkpoint.pt", weights_only=True)["state"]
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert b["step"] == 12
    b = b["state"]
    for k in a["field"]:
        assert torch.equal(a["field"][k], b["field"][k]), k
    assert torch.equal(a["grid"]["binary"], b["grid"]["binary"])


def test_depth_prior_enables_the_ranking_loss(scene_dir, tmp_path):
    import scenes

    scene = scenes.load_scene(scene_dir)
    prior_dir = tmp_path / "prior"
    prior_dir.mkdir()
    for f in scene.train_ids:
        np.save(prior_dir / f"{f}.npy", np.random.default_rng(f).uniform(2, 6, (scene.height, scene.width)))
    ncfg = dataclasses.replace(TINY, depth_prior=prior_dir, depth_patch=4)
    run = tmp_path / "rank"
    _train(scene_dir, run, 5, ncfg=ncfg)
    hist = json.loads((run / "history.json").read_text())
    assert "rank" in hist[-1] and hist[-1]["rank"] >= 0
    (prior_dir / f"{scene.train_ids[0]}.npy").unlink()
    from scenes.errors import ReconError

    with pytest.raises(ReconError, match="depth prior missing"):
        _train(scene_dir, tmp_path / "rank2", 2, ncfg=ncfg)


def test_cli_train_method_nerf(scene_dir, tmp_path):
    from recon.cli import main

    run = tmp_path / "cli"
    assert main(["train", str(scene_dir), "--method", "nerf", "--iters", "2", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "nerf" and metrics["iters"] == 2
    assert json.loads((run / "config.json").read_text())["method"] == "nerf"


def test_cli_eval_scores_a_nerf_run(scene_dir, tmp_path, capsys):
    from recon.cli import main

    run = tmp_path / "ev"
    _train(scene_dir, run, 2)
    (run / "metrics.json").unlink()
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_test"] == 2 and np.isfinite(out["psnr"])
    assert json.loads((run / "metrics.json").read_text())["n_test"] == 2


def _opaque_center_run(scene_dir: Path, run: Path) -> None:
    """A trained run edited so density is high everywhere and only the central cells are occupied."""
    _train(scene_dir, run, 3)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    state = ckpt["state"]
    state["field"]["density_mlp.2.bias"][0] = 6.0  # sigma ~ e^5 >> threshold
    r = state["grid"]["resolution"]
    binary = torch.zeros(r, r, r, dtype=torch.bool)
    binary[r // 4: 3 * r // 4, r // 4: 3 * r // 4, r // 4: 3 * r // 4] = True
    state["grid"]["binary"] = binary.reshape(-1)
    torch.save(ckpt, run / "checkpoint.pt")


def test_export_pointcloud_keeps_dense_occupied_cells(scene_dir, tmp_path):
    from plyfile import PlyData

    from recon.cli import main

    run = tmp_path / "exp"
    _opaque_center_run(scene_dir, run)
    out = tmp_path / "points.ply"
    assert main(["export", str(run), "--format", "pointcloud", "--out", str(out)]) == 0
    v = PlyData.read(str(out))["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], -1)
    assert len(xyz) == (128 // 2) ** 3  # export grid 128^3, the central half per axis occupied
    assert np.abs(xyz).max() <= 0.75 + 1e-5  # box [-1.5, 1.5]^3: central half
    assert v["red"].dtype == np.uint8


def test_export_mesh_with_open3d(scene_dir, tmp_path):
    pytest.importorskip("open3d", reason="mesh export needs the optional open3d-cpu extra")
    from reconstruct.nerf.export import export_nerf

    run = tmp_path / "mesh"
    _opaque_center_run(scene_dir, run)
    from reconstruct.run import Run

    out = export_nerf(Run.open(run), "mesh", tmp_path / "mesh.ply")
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(out))
    assert len(mesh.triangles) > 0
    verts = np.asarray(mesh.vertices)
    assert np.abs(verts).max() < 1.5  # surface of the occupied central cube, inside the AABB


def test_export_rejects_a_splat_run_and_bad_suffix(tmp_path, scene_dir):
    from reconstruct.nerf.export import export_nerf
    from scenes.errors import ReconError

    run = tmp_path / "r"
    _train(scene_dir, run, 1)
    from reconstruct.run import Run

    with pytest.raises(ReconError, match="ply"):
        export_nerf(Run.open(run), "pointcloud", tmp_path / "x.obj")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["method"] = "splat"
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(ReconError, match="checkpoint is a splat run"):
        export_nerf(Run.open(run), "pointcloud")
