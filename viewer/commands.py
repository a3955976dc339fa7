"""CLI surface of the web viewer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class ViewCommand:
    """Open a run folder or a splat file (.ply, compressed .ply, .spz, .splat) in the browser."""

    target: tyro.conf.Positional[Path]
    """Run folder or splat file."""
    host: str = "127.0.0.1"
    """Interface to bind; 127.0.0.1 keeps the viewer private to this machine."""
    port: int = 8080
    """Port to ask for (viser moves to a free one when it is taken; the real one is printed)."""
    max_count: int = 1_000_000
    """Initial point budget sent to the browser (a GUI slider changes it)."""

    def run(self) -> int:
        import time

        from viewer.app import ViewerConfig, view
        from viewer.loading import load_target
        from viewer.server import open_viewer

        target = load_target(self.target)  # bad input fails here, before a server starts
        for note in target.notes:
            print(f"recon view: {note}")
        viewer = open_viewer(host=self.host, port=self.port)
        app = view(
            viewer, splats=target.splats, compressed=target.compressed, scene=target.scene,
            render_fn=target.render_fn, background=target.background,
            config=ViewerConfig(max_count=self.max_count),
        )
        n = len(target.splats) if target.splats is not None else 0
        what = f"{n:,} splats" if n else "server-rendered model"
        print(f"recon view: showing {what} from {self.target}; Ctrl+C to stop", flush=True)
        try:
            while True:
                time.sleep(3600.0)
        finally:
            app.close()
            viewer.stop()
