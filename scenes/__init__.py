"""Reading scenes: Blender, LLFF, COLMAP and nerfstudio formats, sparse-view splits."""
