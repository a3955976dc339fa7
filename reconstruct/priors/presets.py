"""The sparse-view recipe: which priors ``--preset sparse`` turns on (flags still override).

The weight-free priors, measured with `recon bench priors` (fern 3 views at 126 px wide, 200 steps,
3 seeds; CPU): dense plane-sweep initialization carries almost all of the gain (+5 dB alone);
SfM depth, pseudo views and binocular consistency add a few tenths each; Gaussian dropout was
slightly negative at 200 steps (DropGaussian's gain is reported for full 10k-step schedules, where
overfitting sets in; it stays on for full-length runs). Monocular depth and diffusion need weights
that this machine cannot download, so the preset leaves them off; they are one flag away
(``--priors.mono-depth.enabled``, ``--priors.diffusion.enabled``).
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
