"""The viser web viewer: file/run viewer (`recon view`) and live training view.

    viewer = open_viewer(port=8080)          # prints the real URL
    show_splats(viewer.server, splats)       # Gaussian splats drawn by the browser
    app = view(viewer, splats=splats, scene=scene)   # full GUI
    live = LiveViewer(viewer)                # in a training loop: live.update(...); live.wait_if_paused()

Names are imported lazily so that `import viewer` does not start viser.
"""

from __future__ import annotations

_EXPORTS = {
    "ViewerHandle": "viewer.server",
    "open_viewer": "viewer.server",
    "show_splats": "viewer.server",
    "show_cameras": "viewer.server",
    "splat_covariances": "viewer.server",
    "select_splats": "viewer.server",
    "ViewerApp": "viewer.app",
    "ViewerConfig": "viewer.app",
    "view": "viewer.app",
    "LiveViewer": "viewer.live",
    "LiveConfig": "viewer.live",
    "load_target": "viewer.loading",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'viewer' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
