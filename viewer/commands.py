"""CLI surface of the web viewer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconstruct.cli import not_built


@dataclass
class ViewCommand:
    """Open a run folder or a splat file (.ply, compressed .ply, .spz, .splat) in the browser."""

    target: Path
    """Run folder or splat file."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 keeps the viewer private to this machine."""
    port: int = 8080
    """Port to ask for (viser moves to a free one when it is taken; the real one is printed)."""

    def run(self) -> int:
        return not_built("`recon view`")
