"""Named training recipes, each derived from the base config (no copy-pasted presets).

vanilla: plain 3DGS (every prior off). sparse: the few-view recipe (the default when --views <= 9);
the priors issue fills it in (reconstruct.priors). A preset only sets defaults: any flag on the
command line still wins.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from reconstruct.config import TrainConfig


def vanilla(cfg: TrainConfig) -> TrainConfig:
    return dataclasses.replace(cfg, preset="vanilla")


def sparse(cfg: TrainConfig) -> TrainConfig:
    cfg = dataclasses.replace(cfg, preset="sparse")
    try:
        from reconstruct.priors.presets import sparse_priors
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("reconstruct.priors"):
            return cfg  # priors not built: the sparse preset equals vanilla
        raise
    return sparse_priors(cfg)


PRESETS: dict[str, Callable[[TrainConfig], TrainConfig]] = {"vanilla": vanilla, "sparse": sparse}


def default_preset(views: int | None) -> str:
    return "sparse" if views is not None and views <= 9 else "vanilla"


def preset_config(name: str, scene: Path, views: int | None, method: str = "splat") -> TrainConfig:
    if name not in PRESETS:
        raise KeyError(name)
    cfg = TrainConfig(scene=scene, views=views, method=method)  # type: ignore[arg-type]
    if method == "nerf":  # a hash grid converges in fewer, cheaper-to-count steps than 3DGS' 7k schedule
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, iters=3000))
    return PRESETS[name](cfg)
