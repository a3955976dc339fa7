"""The sparse-view recipe: which priors ``--preset sparse`` turns on (flags still override).

The weight-free priors, measured with `recon bench priors` (CPU, 3 seeds; fern 3 views at 126 px
wide and 200 steps, lego 8 views at 100 px and 500 steps): dense plane-sweep initialization carries
almost all of the gain (fern +5.0 dB alone, lego +10.6 dB alone, where SIFT finds no triangulable
matches at 100 px and vanilla falls back to random points). Alone on top of vanilla, SfM depth
(+0.6 fern; nothing to use on lego), pseudo views (+0.25 fern, -0.2 lego) and binocular consistency
(0 fern, +0.35 lego) are within a few tenths; Gaussian dropout was slightly negative at these
short budgets (DropGaussian's gain is reported for full 10k-step schedules, where overfitting sets
in; it stays on for full-length runs). Monocular depth and diffusion need weights that this machine
cannot download, so the preset leaves them off; they are one flag away
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
