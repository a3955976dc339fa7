"""Upright player files: the one orientation step every writer of a player file goes through.

    orientation = player_orientation("auto", scene=run.scene())     # gravity up from the cameras
    path, back_world = write_player_file(out, splats, format="sog", orientation=orientation)

Every format writer (pruning.formats) takes splats in the 3DGS .ply frame, whose up is -y (the
frame players load a .ply, compressed .ply, .splat or SOG in), and the .spz (RUB) and .glb
(KHR_gaussian_splatting, +Y up) writers turn that frame half a turn about x, which makes its -y
their +y. So one rotation per scene, R_file_world taking the world's gravity up onto -y
(reconstruct.upright.align_up), makes every format stand upright in its players: means,
quaternions and SH coefficients turn together (reconstruct.rotation.rotate_splats).

Up, by ``--up``: ``auto`` = the gravity up of the run's training cameras
(reconstruct.upright.scene_up); without cameras (a bare splat file) the file's axes are kept;
``+x`` ... ``-z`` = that axis of the source is up.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from reconstruct.rotation import rotate_poses, rotate_splats
from reconstruct.splats import Splats
from reconstruct.upright import PLY_UP, align_up, angle_deg, scene_up
from scenes.errors import ReconError

if TYPE_CHECKING:
    from scenes.types import SceneData

    from .formats import Format

UpChoice = Literal["auto", "+x", "-x", "+y", "-y", "+z", "-z"]
UP_CHOICES = ("auto", "+x", "-x", "+y", "-y", "+z", "-z")
_AXES = {"x": 0, "y": 1, "z": 2}


@dataclass(frozen=True)
class Orientation:
    """How a scene is turned for players."""

    R_file_world: np.ndarray
    """[3, 3] rotation from the source's frame to the file's (identity = axes kept)."""
    up_world: np.ndarray | None
    """[3] the source frame's up that becomes the file's up; None when the axes are kept."""
    how: str
    """Where the up came from, in words (for the export report)."""

    @property
    def kept(self) -> bool:
        """True when the file keeps the source's axes."""
        return bool(np.allclose(self.R_file_world, np.eye(3)))

    @property
    def turn_deg(self) -> float:
        """Angle of the rotation, degrees."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.R_file_world) - 1) / 2, -1.0, 1.0))))


KEEP = Orientation(R_file_world=np.eye(3), up_world=None, how="axes kept")
"""No rotation: the file is written in the source's axes."""


def axis_vector(up: str) -> np.ndarray:
    """``"+z"`` -> [0, 0, 1]; one of ``+x -x +y -y +z -z``."""
    if len(up) != 2 or up[0] not in "+-" or up[1] not in _AXES:
        raise ReconError(None, f"--up {up!r}: expected one of {', '.join(UP_CHOICES)}")
    v = np.zeros(3)
    v[_AXES[up[1]]] = 1.0 if up[0] == "+" else -1.0
    return v


def player_orientation(up: str = "auto", *, scene: "SceneData | None" = None) -> Orientation:
    """The rotation that puts the up named by ``up`` onto the file's up (-y of the .ply frame).

    ``auto`` with ``scene``: the gravity up of its training cameras; ``auto`` without: keep."""
    if up == "auto":
        if scene is None:
            return replace(KEEP, how="axes kept (no cameras to take up from)")
        est = scene_up(scene)
        how = (f"cameras: up {_fmt(est.up_world)}"
               + (" (a dataset axis, {:.1f} deg from the camera estimate)".format(
                   angle_deg(est.up_world, est.unsnapped_world)) if est.snapped else "")
               + f", {est.median_off_deg:.1f} deg from the cameras' median up")
        return Orientation(R_file_world=align_up(est.up_world, target=PLY_UP), up_world=est.up_world, how=how)
    v = axis_vector(up)
    return Orientation(R_file_world=align_up(v, target=PLY_UP), up_world=v, how=f"--up {up}")


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{c:+.3f}" for c in v) + ")"


def to_player_frame(splats: Splats, orientation: Orientation) -> Splats:
    """``splats`` turned into the file's frame."""
    return rotate_splats(splats, orientation.R_file_world)


def from_player_frame(splats: Splats, orientation: Orientation) -> Splats:
    """Splats read from a player file turned back into the source's frame."""
    return rotate_splats(splats, orientation.R_file_world.T)


def scene_in_player_frame(scene: "SceneData", orientation: Orientation) -> "SceneData":
    """``scene`` with its cameras expressed in the file's frame (to render a player file as is)."""
    return replace(scene, T_world_cam=rotate_poses(scene.T_world_cam, orientation.R_file_world))


def encode_player_file(splats: Splats, *, format: "Format", orientation: Orientation, sh_degree: int | None = None,
                       spz_version: int = 3) -> bytes:
    """The bytes of ``splats`` as a player file, turned upright by ``orientation``."""
    from .formats import encode_splats

    return encode_splats(to_player_frame(splats, orientation), format=format, sh_degree=sh_degree,
                         spz_version=spz_version)


def write_player_file(path: str | Path, splats: Splats, *, format: "Format | None" = None,
                      orientation: Orientation | None = None, scene: "SceneData | None" = None,
                      sh_degree: int | None = None, spz_version: int = 3) -> tuple[Path, Splats]:
    """Write ``splats`` (world frame) upright to ``path`` atomically; returns (path, the file read
    back with our reader and turned back into the world frame, ready to score on ``scene``).

    ``orientation``: default ``player_orientation("auto", scene=scene)``."""
    from .formats import read_splats, write_splats

    orientation = orientation if orientation is not None else player_orientation("auto", scene=scene)
    path = write_splats(path, to_player_frame(splats, orientation), format=format, sh_degree=sh_degree,
                        spz_version=spz_version)
    return path, from_player_frame(read_splats(path), orientation)
