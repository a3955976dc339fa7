"""Photos in: camera refinement (gradients on the CPU backend, a perturbed camera recovered), the
refusal path through the CLI, `recon train PHOTOS` end to end on a textured box SfM registers,
poses.json read back as a nerfstudio scene, and `--poses estimate` scored against a posed dataset."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.cli import main
from reconstruct import gaussians as G
from reconstruct.cameras import CameraRefinement, refine_camera, rotation_angle_deg, se3_exp
from reconstruct.config import CameraRefineConfig
from scenes.geometry import look_at
from test_sfm import FOCAL, H, W, _textures, _write_views, box_cameras, render_box

FAST = ["--preset", "vanilla", "--init.kind", "sfm", "--optim.sh-degree", "0", "--densify.no-enabled",
        "--output.log-every", "5", "--resolution", "96", "--cameras.start-step", "0"]


# ----------------------------------------------------------------------------- camera refinement
def _blobs(n: int = 2500, seed: int = 0) -> G.Activated:
    """Random coloured Gaussians filling [-1, 1]^3 (no gradients)."""
    rng = np.random.default_rng(seed)

    def t(a):
        return torch.tensor(a, dtype=torch.float32)

    return G.Activated(means=t(rng.uniform(-1, 1, (n, 3))), quats=t(rng.normal(size=(n, 4))),
                       scales=torch.full((n, 3), 0.05), opacities=torch.full((n,), 0.88),
                       colors=t(rng.normal(size=(n, 1, 3))))


K_TINY = torch.tensor([[45.0, 0.0, 40.0], [0.0, 45.0, 30.0], [0.0, 0.0, 1.0]])
T_TINY = torch.tensor(look_at([0.0, -2.5, 0.8], [0.0, 0.0, 0.0]), dtype=torch.float32)[None]  # [1, 4, 4]


def _render(gs: G.Activated, T_world_cam: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """[60, 80, 3] render of ``gs`` from T_world_cam [1, 4, 4]."""
    from reconstruct.raster import rasterize

    viewmats = torch.linalg.inv(T_world_cam)
    img, _, _ = rasterize(gs.means, gs.quats, gs.scales, gs.opacities, gs.colors, viewmats, K_TINY[None], 80, 60,
                          sh_degree=0, backgrounds=torch.zeros((1, 3)), backend=backend)  # type: ignore[arg-type]
    return img[0]


def test_camera_gradients_reach_the_correction_on_the_cpu_backend():
    gs = _blobs(600)
    weights = torch.rand((60, 80, 3), generator=torch.Generator().manual_seed(1))
    grads = {}
    for backend in ("cpu", "reference"):
        cams = CameraRefinement(1, cfg=CameraRefineConfig(anchor_first=False), scene_scale=2.0, total_steps=10,
                                device=torch.device("cpu"))
        (_render(gs, cams.corrected(0, T_TINY), backend) * weights).sum().backward()
        assert cams.xi.grad is not None
        grads[backend] = cams.xi.grad.clone()
    assert grads["cpu"].abs().min() > 0, grads["cpu"]  # every component of the 6-vector is reached
    torch.testing.assert_close(grads["cpu"], grads["reference"], rtol=2e-3, atol=1e-3)


def test_se3_exp_is_a_rigid_transform_and_identity_at_zero():
    xi = torch.tensor([[0.1, -0.2, 0.3, 0.02, -0.01, 0.03], [0.0] * 6])
    T = se3_exp(xi)
    R = T[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(T[1], torch.eye(4))
    angle = float(rotation_angle_deg(torch.eye(3), R[0]))
    assert angle == pytest.approx(math.degrees(math.sqrt(0.02**2 + 0.01**2 + 0.03**2)), rel=1e-4)


def test_refinement_recovers_a_camera_perturbed_by_2_degrees_and_2_percent():
    from scipy.spatial.transform import Rotation

    gs = _blobs()
    extent = float(T_TINY[0, :3, 3].norm())  # camera distance to the scene centre
    with torch.no_grad():
        target = _render(gs, T_TINY)
    axis = np.array([1.0, 2.0, -1.0]) / math.sqrt(6)
    T_bad = T_TINY.clone()
    T_bad[0, :3, :3] = torch.tensor(Rotation.from_rotvec(math.radians(2.0) * axis).as_matrix(), dtype=torch.float32) @ T_TINY[0, :3, :3]
    T_bad[0, :3, 3] += 0.02 * extent * torch.tensor([0.6, -0.48, 0.64])
    assert float(rotation_angle_deg(T_bad[0, :3, :3], T_TINY[0, :3, :3])) == pytest.approx(2.0, abs=1e-3)
    T_fix, losses = refine_camera(lambda T: _render(gs, T), T_bad, target, steps=100, lr=5e-3, scene_scale=extent)
    rot = float(rotation_angle_deg(T_fix[0, :3, :3], T_TINY[0, :3, :3]))
    pos = float((T_fix[0, :3, 3] - T_TINY[0, :3, 3]).norm()) / extent
    assert rot < 0.2 and pos < 0.004, (rot, pos)
    assert min(losses) < 0.05 * losses[0]


def test_camera_state_round_trips_with_its_adam():
    cfg = CameraRefineConfig(lr=1e-2, lr_final=1e-4, start_step=0)
    a = CameraRefinement(3, cfg=cfg, scene_scale=1.0, total_steps=10, device=torch.device("cpu"))
    for step in range(3):
        (a.corrected(1, T_TINY).sum() + a.corrected(0, T_TINY).sum()).backward()
        a.step(step)
    assert a.xi[0].abs().max() == 0 and a.xi[1].abs().max() > 0  # view 0 is the anchor
    b = CameraRefinement(3, cfg=cfg, scene_scale=1.0, total_steps=10, device=torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.xi, a.xi)
    for cams in (a, b):
        cams.corrected(1, T_TINY).sum().backward()
        cams.step(3)
    torch.testing.assert_close(b.xi, a.xi)  # the Adam moments came along
    assert a.lr_at(0) == pytest.approx(1e-2) and a.lr_at(10) == pytest.approx(1e-4)


# ----------------------------------------------------------------------------- the CLI on photos
def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_unregistrable_photos_are_refused_in_one_line_and_no_run_folder_is_left(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(3):  # three different boxes seen from three different places
        for p in _write_views(tmp_path / f"s{seed}", box_cameras(3)[seed: seed + 1], seed=10 + seed):
            p.rename(folder / f"{seed}_{p.name}")
    before = _listing(folder)
    out = tmp_path / "run"
    assert main(["train", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "of 3 photos could be registered" in err[0] and "overlap" in err[0], err
    assert not out.exists()
    assert _listing(folder) == before


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("photos")
    paths = _write_views(root / "photos", box_cameras(5))
    before = _listing(root / "photos")
    out = root / "run"
    assert main(["train", str(root / "photos"), *FAST, "--iters", "20", "--out", str(out)]) == 0
    return {"root": root, "out": out, "paths": paths, "before": before}


def test_recon_train_photos_writes_poses_checkpoint_and_an_orbit(photo_run):
    import imageio.v3 as iio

    from reconstruct.run import Run

    out = photo_run["out"]
    assert _listing(photo_run["root"] / "photos") == photo_run["before"]  # nothing written beside the photos
    for name in ("poses.json", "sfm", "sparse_pc.ply", "config.json", "checkpoint.pt", "splats.ply", "metrics.json"):
        assert (out / name).exists(), name
    poses = json.loads((out / "poses.json").read_text())
    assert poses["recon_sfm"]["registered"] == 5 and len(poses["frames"]) == 5
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["poses"] == "estimate" and cfg["cameras"]["enabled"] is True
    state = torch.load(out / "checkpoint.pt", weights_only=True)["state"]
    assert tuple(state["cameras"]["xi"].shape) == (5, 6) and state["cameras"]["xi"].abs().max() > 0
    history = torch.load(out / "checkpoint.pt", weights_only=True)["history"]
    assert "pose estimation" in history[0]["init"]  # the SfM points seeded the Gaussians
    frames = iio.imread(out / "renders" / "orbit.gif", index=None)
    assert frames.shape[0] == 36 and frames.shape[1:3] == (72, 96)
    assert frames.std(axis=0).mean() > 1.0  # the camera moves
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["registered"] == 5 and metrics["n_train"] == 5 and metrics["n_test"] == 0
    assert 5 < metrics["train_psnr"] < 60
    assert len(list((out / "renders").glob("train_*.png"))) == 5
    scene = Run.open(out).scene()
    assert scene.train_ids == (0, 1, 2, 3, 4) and scene.test_ids == ()


def test_poses_json_read_back_by_recon_train_as_nerfstudio_gives_the_same_cameras(photo_run):
    import scenes
    from recon.train import parse_train
    from reconstruct.run import Run

    out = photo_run["out"]
    req = parse_train([str(out / "poses.json"), "--iters", "1", "--resolution", "96"])
    assert req.cfg.poses == "dataset"  # a posed scene now
    ns = scenes.load_scene(out / "poses.json", resolution=96)
    run_scene = Run.open(out).scene()
    assert ns.format == "nerfstudio" and ns.n_frames == run_scene.n_frames == 5
    np.testing.assert_allclose(ns.T_world_cam, run_scene.T_world_cam, atol=1e-9)
    np.testing.assert_allclose(ns.Ks, run_scene.Ks, atol=1e-9)
    assert [p.name for p in ns.image_paths] == [p.name for p in photo_run["paths"]]


def test_rerun_and_resume_reuse_poses_json(photo_run, capsys):
    out = photo_run["out"]
    stamp = (out / "poses.json").stat().st_mtime_ns
    assert main(["train", str(photo_run["root"] / "photos"), *FAST, "--iters", "10", "--out", str(out), "--overwrite"]) == 0
    assert "reusing" in capsys.readouterr().err
    assert (out / "poses.json").stat().st_mtime_ns == stamp
    assert main(["train", "--resume", str(out), "--iters", "15"]) == 0
    assert "reusing" in capsys.readouterr().err
    assert (out / "poses.json").stat().st_mtime_ns == stamp
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 15


def test_holdout_scores_held_out_photos(photo_run, tmp_path):
    out = tmp_path / "holdout"
    assert main(["train", str(photo_run["root"] / "photos"), *FAST, "--iters", "10", "--holdout", "1", "--out", str(out),
                 "--cameras.test-steps", "5"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == 1 and metrics["n_train"] == 4 and metrics["psnr"] is not None
    assert (out / "renders" / "test_0002.png").is_file()


# ----------------------------------------------------------------------------- --poses estimate on a posed dataset
def _posed_box_dataset(root: Path, n: int = 9) -> np.ndarray:
    """A nerfstudio transforms.json of n box views (every 8th frame is a test view): the true cameras."""
    import scene_fixtures
    from PIL import Image

    T = box_cameras(n)
    tex = _textures(0)
    (root / "images").mkdir(parents=True)
    frames = []
    for i, T_world_cam in enumerate(T):
        Image.fromarray(render_box(T_world_cam, tex)).save(root / "images" / f"f{i:02d}.png")
        frames.append({"file_path": f"images/f{i:02d}.png", "transform_matrix": scene_fixtures.opencv_to_opengl(T_world_cam).tolist()})
    meta = {"fl_x": FOCAL, "fl_y": FOCAL, "cx": W / 2, "cy": H / 2, "w": W, "h": H, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    return T


def test_poses_estimate_uses_training_images_only_and_scores_after_alignment(tmp_path, capsys):
    data = tmp_path / "box"
    _posed_box_dataset(data)
    before = _listing(data)
    out = tmp_path / "run"
    assert main(["train", str(data), "--poses", "estimate", *FAST, "--iters", "20", "--out", str(out),
                 "--cameras.test-steps", "10"]) == 0
    printed = capsys.readouterr().out
    assert "rotation_error_deg" in printed and "position_error" in printed
    assert _listing(data) == before  # nothing copied or linked into the dataset
    poses = json.loads((out / "poses.json").read_text())
    names = sorted(Path(fr["file_path"]).name for fr in poses["frames"])
    assert names == [f"f{i:02d}.png" for i in range(1, 8)]  # the training views only (test: 0 and 8)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["registered"] == 7 and metrics["n_test"] == 2 and metrics["n_views"] == 7
    assert metrics["rotation_error_deg"] < 1.0 and metrics["position_error"] < 0.05, metrics
    assert metrics["psnr"] is not None and metrics["psnr_unaligned"] is not None
    assert main(["eval", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["rotation_error_deg"] == pytest.approx(metrics["rotation_error_deg"], abs=0.01)
    assert again["registered"] == 7


def test_poses_flags_that_do_not_fit_the_scene_are_refused(tmp_path, capsys):
    folder = tmp_path / "photos"
    _write_views(folder, box_cameras(2))
    for args, needle in ((["--poses", "dataset"], "--poses dataset needs a posed dataset"),
                         (["--poses", "refine"], "--poses refine needs a posed dataset")):
        assert main(["train", str(folder), *args, "--out", str(tmp_path / "never")]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "never").exists()
    assert main(["train", "nerf", str(folder), "--poses", "refine", "--out", str(tmp_path / "never")]) == 1
    assert "--poses refine" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pure pieces
def test_alignment_recovers_a_similarity_and_reports_zero_error_for_exact_cameras():
    from scipy.spatial.transform import Rotation

    from reconstruct.posefree import align_cameras, pose_errors
    from scenes.geometry import similarity, transform_poses

    T_gt = box_cameras(4)
    S = similarity(2.5, Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix(), np.array([1.0, -2.0, 0.5]))
    T_est = transform_poses(S, 2.5, T_gt)  # the same cameras in another world
    for cams in (slice(None), slice(0, 2)):  # 4 cameras, and 2 (centres plus axis points)
        sim = align_cameras(T_est[cams], T_gt[cams])
        np.testing.assert_allclose(sim.cameras_to_gt(T_est[cams]), T_gt[cams], atol=1e-9)
        np.testing.assert_allclose(sim.cameras_to_est(T_gt[cams]), T_est[cams], atol=1e-9)
        err = pose_errors(T_est[cams], T_gt[cams])
        assert err["rotation_error_deg_max"] < 1e-5 and err["position_error_max"] < 1e-9


def test_orbit_circles_a_ring_of_cameras_and_sweeps_an_arc():
    from reconstruct.posefree import orbit_cameras
    from scene_fixtures import orbit_poses

    for T, full in ((orbit_poses(8), True), (box_cameras(5), False)):
        orbit = orbit_cameras(T)
        assert orbit.shape == (36, 4, 4)
        up = -T[:, :3, 1].mean(0)
        assert (np.einsum("fi,i->f", -orbit[:, :3, 1], up) > 0).all()  # upright frames
        centre = orbit[:, :3, 3].mean(0)
        ax = np.cross(orbit[0, :3, 3] - centre, orbit[9, :3, 3] - centre)
        assert np.linalg.norm(ax) > 0
        spread = np.ptp(np.unwrap(np.arctan2(*(orbit[:, :2, 3] - centre[:2]).T[::-1])))
        assert (spread > 5.5) == full, spread


def test_split_photos_holds_out_evenly_spaced_photos():
    from reconstruct.poses import split_photos
    from scenes import ReconError
    from scenes.types import SceneData

    scene = SceneData(format="nerfstudio", root=Path("."), image_paths=(), Ks=np.tile(np.eye(3), (9, 1, 1)),
                      T_world_cam=np.tile(np.eye(4), (9, 1, 1)), width=8, height=8, train_ids=tuple(range(9)),
                      test_ids=(), near=0.1, far=10.0)
    s = split_photos(scene, holdout=2, views=None, path=Path("p.json"))
    assert s.test_ids == (3, 5) and s.train_ids == (0, 1, 2, 4, 6, 7, 8)
    assert split_photos(scene, holdout=0, views=3, path=Path("p.json")).train_ids == (0, 4, 8)
    with pytest.raises(ReconError, match="--holdout 8"):
        split_photos(scene, holdout=8, views=None, path=Path("p.json"))


def test_splat_method_composes_camera_refinement_and_fixes_a_perturbed_training_view():
    """Two training views of frozen Gaussians, the second one's pose off by 2 degrees: the method's
    training steps move only the cameras, and the second view's corrected pose lands on the truth."""
    from scipy.spatial.transform import Rotation

    from reconstruct.config import LossConfig, OptimConfig
    from reconstruct.splatting import PARAM_NAMES, GaussianModel, SplatMethod
    from scenes.types import SceneData

    gs = _blobs()
    T_true = np.stack([T_TINY[0].numpy(), look_at([1.2, -2.2, 0.9], [0.0, 0.0, 0.0])]).astype(np.float64)
    with torch.no_grad():
        images = [_render(gs, torch.tensor(T, dtype=torch.float32)[None]).numpy() for T in T_true]
    T_bad = T_true.copy()
    T_bad[1, :3, :3] = Rotation.from_rotvec(math.radians(2.0) * np.array([0.0, 0.6, 0.8])).as_matrix() @ T_true[1, :3, :3]
    scene = SceneData(format="synthetic", root=Path("."), image_paths=(), Ks=np.tile(K_TINY.numpy().astype(np.float64), (2, 1, 1)),
                      T_world_cam=T_bad, width=80, height=60, train_ids=(0, 1), test_ids=(), near=0.1, far=10.0,
                      loader=lambda i: images[i])
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(gs.means.clone()), "quats": torch.nn.Parameter(gs.quats.clone()),
        "scales": torch.nn.Parameter(gs.scales.log()), "opacities": torch.nn.Parameter(torch.logit(gs.opacities)),
        "sh0": torch.nn.Parameter(gs.colors.clone()), "shN": torch.nn.Parameter(torch.zeros((len(gs.means), 0, 3)))})
    model = GaussianModel(params, {}, scene_scale=2.6)
    model.freeze(PARAM_NAMES)
    method = SplatMethod(scene, model, optim=OptimConfig(sh_degree=0), loss=LossConfig(), total_steps=160, seed=0)
    method.cameras = CameraRefinement(2, cfg=CameraRefineConfig(lr=5e-3, lr_final=5e-4, start_step=0), scene_scale=2.6,
                                      total_steps=160, device=torch.device("cpu"))
    before = float(rotation_angle_deg(torch.tensor(T_bad[1, :3, :3]), torch.tensor(T_true[1, :3, :3])))
    for step in range(160):
        method.train_step(step)
    T_fixed = method.training_cameras()
    after = float(rotation_angle_deg(torch.tensor(T_fixed[1, :3, :3]), torch.tensor(T_true[1, :3, :3])))
    assert before == pytest.approx(2.0, abs=1e-3) and after < 0.3, after
    np.testing.assert_allclose(T_fixed[0], T_true[0], atol=1e-6)  # the anchor stays
    state = method.state_dict()
    assert tuple(state["cameras"]["xi"].shape) == (2, 6)
