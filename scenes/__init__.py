"""Reading scenes: Blender, LLFF, COLMAP and nerfstudio formats, sparse-view splits."""

from scenes.errors import ReconError
from scenes.load import detect_format, load_scene
from scenes.types import SceneData

__all__ = ["ReconError", "SceneData", "detect_format", "load_scene"]
