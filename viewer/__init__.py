"""The viser web viewer: file/run viewer and live training view."""
