"""Reading scenes: Blender, LLFF, COLMAP, nerfstudio and DTU formats, sparse-view splits; photos without poses (scenes.photos, scenes.sfm)."""

from scenes.errors import ReconError
from scenes.load import detect_format, load_scene
from scenes.types import SceneData

__all__ = ["ReconError", "SceneData", "detect_format", "load_scene"]
