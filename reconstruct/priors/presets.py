"""The sparse-view recipe: which priors ``--preset sparse`` turns on (flags still override).

Chosen from `recon bench priors` on fern 3 views and lego 8 views: the weight-free priors that
helped there. Monocular depth and diffusion need weights that this machine cannot download, so the
preset leaves them off; they are one flag away (``--priors.mono-depth.enabled``).
"""

from __future__ import annotations

import dataclasses

from reconstruct.priors.config import PriorsConfig

SPARSE_PRIORS = ("dropout", "binocular", "dense_init", "pseudo_views", "sfm_depth")
"""Priors on in the sparse preset."""


def with_priors(priors: PriorsConfig, names: tuple[str, ...] | list[str]) -> PriorsConfig:
    """A copy of ``priors`` with exactly the named sub-configs enabled."""
    names = set(names)
    unknown = names - {f.name for f in dataclasses.fields(priors) if f.name != "cache_dir"}
    assert not unknown, f"unknown priors {sorted(unknown)}"
    out = {}
    for f in dataclasses.fields(priors):
        sub = getattr(priors, f.name)
        if dataclasses.is_dataclass(sub):
            out[f.name] = dataclasses.replace(sub, enabled=f.name in names)
    return dataclasses.replace(priors, **out)


def sparse_priors(cfg):
    """TrainConfig -> TrainConfig with the sparse-view priors on."""
    return dataclasses.replace(cfg, priors=with_priors(cfg.priors, SPARSE_PRIORS))
