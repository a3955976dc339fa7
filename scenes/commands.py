"""CLI surface of `recon info`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconstruct.cli import not_built


@dataclass
class InfoCommand:
    """Describe a scene: format, frames, image size, sparse-view split, sparse points."""

    scene: Path
    """Scene folder."""
    views: int | None = None
    """Training views (None = every non-test frame)."""
    downscale: float | None = None
    """Divide image size by this factor."""
    resolution: int | None = None
    """Target image width in pixels (alternative to --downscale)."""
    json: bool = False
    """Print exactly one JSON object."""

    def run(self) -> int:
        return not_built("`recon info`")
