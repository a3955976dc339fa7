"""Format detection and the one entry point, ``load_scene``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenes.errors import ReconError
from scenes.types import SceneData, SceneFormat

#: What each format is recognized by, in detection order (shown in the unknown-format error).
SIGNATURES: tuple[tuple[str, str], ...] = (
    ("blender", "transforms_train.json"),
    ("dtu", "image/ + cameras_sphere.npz"),
    ("llff", "poses_bounds.npy"),
    ("nerfstudio", "transforms.json"),
    ("colmap", "sparse/0/images.bin|.txt"),
    ("photos", "2+ photos (jpg/png), optionally in images/"),
)


#: Files that stand for the folder holding them.
_FOLDER_FILES = ("transforms_train.json", "transforms_test.json", "transforms_val.json", "poses_bounds.npy")


def _resolve(path: Path) -> tuple[Path, Path | None]:
    """(scene folder, nerfstudio JSON file or None) for a folder or a file inside one."""
    if path.is_file():
        if path.name in _FOLDER_FILES:
            return path.parent, None
        if path.suffix == ".json":
            return path.parent, path
    return path, None


def detect_format(path: str | Path) -> SceneFormat:
    """Which reader a scene folder needs: "blender", "dtu", "llff", "nerfstudio", "colmap" or "photos".

    Blender wins over everything (transforms_train.json); DTU (IDR camera file beside image/)
    comes before LLFF because DTU copies often carry an extra poses_bounds.npy; LLFF comes
    before COLMAP because LLFF releases ship a partial sparse/0 (fern has no images.bin). A
    folder with none of these that holds photos (directly or in images/) is "photos": images
    without poses, for ``scenes.sfm.estimate_poses``. A path to another JSON file
    means a nerfstudio transforms file; poses_bounds.npy or transforms_train.json stand for
    their folder. Raises ReconError for a missing folder or an unknown layout.
    """
    from scenes.colmap import find_model_dir
    from scenes.dtu import find_cameras_file
    from scenes.photos import photo_folder

    path, json_path = _resolve(Path(path))
    if json_path is not None:
        return "nerfstudio"
    if not path.exists():
        raise ReconError(path, "scene folder does not exist")
    if not path.is_dir():
        raise ReconError(path, "is not a scene folder")
    if (path / "transforms_train.json").is_file():
        return "blender"
    if find_cameras_file(path) is not None:
        return "dtu"
    if (path / "poses_bounds.npy").is_file():
        return "llff"
    if (path / "transforms.json").is_file():
        return "nerfstudio"
    if find_model_dir(path) is not None:
        return "colmap"
    if photo_folder(path) is not None:
        return "photos"
    expected = ", ".join(sig for _, sig in SIGNATURES)
    raise ReconError(path, f"unknown scene format (expected one of: {expected})")


def load_scene(
    path: str | Path,
    *,
    views: int | str | None = None,
    downscale: float | None = None,
    resolution: int | None = None,
    test_every: int = 1,
) -> SceneData:
    """Read a scene folder of any supported format into one ``SceneData``.

    ``views``: training views (None or "all" = every non-test frame); ``downscale``: divide the
    full-resolution size by this factor (None = the format's default: full size, or the finest
    images_N folder LLFF / COLMAP provide); ``resolution``: target width in pixels instead;
    ``test_every``: Blender only, keep every n-th frame of the test file (1 = all 200).
    Headers of all images are checked here; pixels load lazily through ``scene.image(i)``.
    """
    path, json_path = _resolve(Path(path))
    fmt = detect_format(json_path or path)
    if isinstance(views, str):
        if views != "all":
            raise ReconError(path, f"--views must be a number or 'all', got {views!r}")
        views = None
    if test_every < 1:
        raise ReconError(path, f"test_every must be at least 1, got {test_every}")
    kwargs: dict[str, Any] = dict(views=views, downscale=downscale, resolution=resolution, test_every=test_every)
    if fmt == "blender":
        from scenes.blender import read_blender

        scene = read_blender(path, **kwargs)
    elif fmt == "dtu":
        from scenes.dtu import read_dtu

        scene = read_dtu(path, **kwargs)
    elif fmt == "photos":
        raise ReconError(
            path, "holds photos without camera poses; estimate them first (scenes.sfm.estimate_poses, then load_estimated_scene)"
        )
    elif fmt == "llff":
        from scenes.llff import read_llff

        scene = read_llff(path, **kwargs)
    elif fmt == "nerfstudio":
        from scenes.nerfstudio import read_nerfstudio

        scene = read_nerfstudio(path, json_path=json_path, **kwargs)
    else:
        from scenes.colmap import read_colmap

        scene = read_colmap(path, **kwargs)
    check_scene(scene, json_path or path)
    return scene


def check_scene(scene: SceneData, where: Path) -> None:
    """Refuse, in one line naming ``where``, cameras that no method can use: non-finite or singular
    poses, rotations that are not proper (det +1, orthonormal) and non-positive focal lengths."""
    import numpy as np
    T = np.asarray(scene.T_world_cam, dtype=np.float64)
    K = np.asarray(scene.Ks, dtype=np.float64)
    for i in range(len(T)):
        if not (np.isfinite(T[i]).all() and np.isfinite(K[i]).all()):
            raise ReconError(where, f"frame {i}: camera pose or intrinsics have non-finite values")
        R = T[i, :3, :3]
        if abs(np.linalg.det(R) - 1.0) > 1e-3 or np.abs(R.T @ R - np.eye(3)).max() > 1e-3:
            raise ReconError(where, f"frame {i}: camera rotation is not a proper rotation (singular, scaled or mirrored pose "
                                    f"matrix, det {np.linalg.det(R):.3g})")
        if K[i, 0, 0] <= 0 or K[i, 1, 1] <= 0:
            raise ReconError(where, f"frame {i}: focal length must be positive (fx {K[i, 0, 0]:.3g}, fy {K[i, 1, 1]:.3g})")


def check_images_decode(scene: SceneData, ids: list[int] | tuple[int, ...]) -> None:
    """Decode every image of frames ``ids`` once (nothing is kept), so a truncated or corrupt file is
    refused before training starts rather than when it is first used."""
    from scenes.images import decode

    for i in ids:
        if i < len(scene.image_paths) and str(scene.image_paths[i]):
            decode(scene.image_paths[i], scene.background)
