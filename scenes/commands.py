"""CLI surface of `recon info`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class InfoCommand:
    """Describe a scene: format, frames, image size, sparse-view split, sparse points."""

    scene: tyro.conf.Positional[Path]
    """Scene folder (Blender, LLFF, COLMAP or nerfstudio layout), or a transforms.json file."""
    views: int | Literal["all"] | None = None
    """Training views (all / None = every non-test frame)."""
    downscale: float | None = None
    """Divide image size by this factor."""
    resolution: int | None = None
    """Target image width in pixels (alternative to --downscale)."""
    json: bool = False
    """Print exactly one JSON object."""

    def run(self) -> int:
        from scenes.info import print_info

        return print_info(
            self.scene,
            views=None if self.views == "all" else self.views,
            downscale=self.downscale,
            resolution=self.resolution,
            as_json=self.json,
        )
