"""Teacher views: the run's renders between its training cameras keep, through mask fine-tuning,
what only a novel view sees."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pruning.artifact import load_artifact
from pruning.compress import CompressConfig, compress_splats
from pruning.teacher import neighbour_pairs, teacher_fractions, teacher_poses, with_teacher_views
from reconstruct.evaluate import render_splats
from reconstruct.metrics import psnr
from reconstruct.splats import Splats
from scenes.geometry import look_at
from scenes.types import SceneData
from tests.test_compress import _gt_splats

H = W = 32
DEG = (0.0, 45.0, 90.0)  # cameras on a circle; train 0 and 90, test 45


def _hidden_splats() -> Splats:
    """The cluster at the origin plus one big opaque Gaussian behind and above it as the 45-degree
    camera sees it: outside both training cameras' fields of view (half-FOV 21.8 degrees)."""
    base = _gt_splats(40, seed=5)
    d = np.array([np.cos(np.pi / 4), np.sin(np.pi / 4), 0.0])
    extra = Splats(means=(-6.0 * d + [0.0, 0.0, 1.5])[None].astype(np.float32), quats=np.array([[1.0, 0, 0, 0]], np.float32),
                   log_scales=np.full((1, 3), np.log(0.4), np.float32), opacity_logits=np.array([4.0], np.float32),
                   sh0=np.array([[2.5, -2.0, -2.0]], np.float32), shN=np.zeros((1, 3, 3), np.float32))
    return Splats(**{f: np.concatenate([getattr(base, f), getattr(extra, f)])
                     for f in ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")})


def _scene(splats: Splats) -> SceneData:
    Ts = np.stack([look_at([2.5 * np.cos(np.radians(a)), 2.5 * np.sin(np.radians(a)), 0.0], [0.0, 0.0, 0.0])
                   for a in DEG])
    K = np.array([[40.0, 0, W / 2], [0, 40.0, H / 2], [0, 0, 1]])
    scene = SceneData(format="blender", root=Path("."), image_paths=(), Ks=np.stack([K] * 3), T_world_cam=Ts,
                      width=W, height=H, train_ids=(0, 2), test_ids=(1,), near=0.5, far=8.0,
                      background=(1.0, 1.0, 1.0))
    images = {i: render_splats(splats, scene, i)[0].numpy().astype(np.float32) for i in range(3)}
    object.__setattr__(scene, "loader", lambda i: images[i])
    return scene


def test_teacher_poses_lie_between_and_just_beyond_neighbours():
    splats = _hidden_splats()
    scene = _scene(splats)
    assert neighbour_pairs(scene.T_world_cam, [0, 2]) == [(0, 2)]
    np.testing.assert_allclose(teacher_fractions(4), [-0.25, 0.25, 0.75, 1.25])
    np.testing.assert_allclose(teacher_fractions(1), [0.5])
    poses, frames = teacher_poses(scene, 5)
    assert poses.shape == (5, 4, 4) and frames == [0] * 5
    a, b = scene.T_world_cam[0][:3, 3], scene.T_world_cam[2][:3, 3]
    np.testing.assert_allclose(poses[2][:3, 3], (a + b) / 2, atol=1e-9)  # fraction 0.5
    np.testing.assert_allclose(poses[0][:3, 3], a - 0.25 * (b - a), atol=1e-9)
    for T in poses:  # rotations stay rotations
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)


def test_interpolated_pose_is_slerp_inside_and_continues_outside():
    from scipy.spatial.transform import Rotation, Slerp

    from reconstruct.priors.pseudo import interpolate_pose

    scene = _scene(_hidden_splats())
    T_a, T_b = scene.T_world_cam[0], scene.T_world_cam[2]
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T_a[:3, :3], T_b[:3, :3]])))
    for t in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(interpolate_pose(T_a, T_b, t)[:3, :3], slerp([t]).as_matrix()[0], atol=1e-9)
    # beyond the ends: the same rotation step again
    step = T_a[:3, :3].T @ interpolate_pose(T_a, T_b, 0.25)[:3, :3]
    np.testing.assert_allclose(interpolate_pose(T_a, T_b, -0.25)[:3, :3], T_a[:3, :3] @ step.T, atol=1e-9)


def test_teacher_scene_appends_rendered_frames_and_keeps_the_rest():
    splats = _hidden_splats()
    scene = _scene(splats)
    out = with_teacher_views(scene, splats, views_per_pair=3)
    assert out.n_frames == 6 and out.train_ids == (0, 2, 3, 4, 5) and out.test_ids == scene.test_ids
    for i in range(3):
        np.testing.assert_array_equal(out.image(i), scene.image(i))
    poses, frames = teacher_poses(scene, 3)
    for k in range(3):
        want = render_splats(splats, scene, frames[k], T_world_cam=poses[k])[0].numpy()
        np.testing.assert_allclose(out.image(3 + k), want, atol=1e-6)
    assert with_teacher_views(scene, splats, views_per_pair=0) is scene


@pytest.mark.parametrize("teacher", [0, 5])
def test_masks_keep_what_only_novel_views_see_with_teacher_views(tmp_path, teacher):
    splats = _hidden_splats()
    scene = _scene(splats)
    # the hidden Gaussian is absent from both training views and fills the test view's centre
    without = splats.subset(np.arange(len(splats) - 1))
    for i in (0, 2):
        np.testing.assert_allclose(render_splats(without, scene, i)[0], scene.image(i), atol=2e-3)
    assert float(np.abs(render_splats(without, scene, 1)[0].numpy() - scene.image(1)).max()) > 0.25
    cfg = CompressConfig(masks=True, quantize=False, mask_steps=60, mask_lambda=0.05, mask_lr=0.25,
                         mask_prune_every=20, progress=False, export_compressed_ply=False, export_sog=False,
                         device="cpu", teacher_views=teacher)
    report = compress_splats(splats, scene, tmp_path / str(teacher), cfg)
    assert report["n_teacher_views"] == teacher
    after = load_artifact(tmp_path / str(teacher))
    hidden = np.linalg.norm(after.means - splats.means[-1], axis=1).min() < 0.05
    lost = psnr(render_splats(without, scene, 1)[0], torch.as_tensor(scene.image(1)))  # the test view without it
    if teacher:
        assert hidden and report["psnr_after"] > lost + 2, (report["psnr_after"], lost)  # kept: teacher views see it
    else:
        assert not hidden and report["psnr_after"] < lost + 1, (report["psnr_after"], lost)  # no photo needs it


def test_cli_refuses_negative_teacher_views(tmp_path, capsys):
    from recon.cli import main

    assert main(["compress", str(tmp_path), "--teacher-views", "-1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--teacher-views" in err[0], err
