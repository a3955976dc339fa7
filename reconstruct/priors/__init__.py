"""Sparse-view priors for Gaussian splats.

``attach_priors(method, priors, cache_dir)`` adds, for each enabled prior, a modifier (Gaussian
dropout) or a regularizer (binocular consistency, pseudo views, SfM depth, monocular depth, the
diffusion prior) to a ``reconstruct.splatting.SplatMethod``. Dense initialization is an init kind
(``--init.kind dense``, reconstruct/init.py), not a prior. Nothing heavy is imported until a prior
is switched on.

What the sparse preset turns on (``reconstruct.config.SPARSE_PRIORS``): Gaussian dropout and SfM
depth, from the SfM points of the training views, with the plane-sweep points only where SfM finds
too few (``--init.fallback dense``). That is DropGaussian's recipe (dropout alone on 3DGS, 20.76 dB
on LLFF 3 views at 10k steps) as its released code sets it: the drop rate rising linearly from 0 to
0.2 over the run, densification with a 5e-4 gradient threshold until the last step and no pruning of
large Gaussians (``reconstruct.config.resolve``), plus the sparse depth of the points it starts from;
its 10k-step schedule costs about what vanilla's does. The SfM points come from SIFT on 2x images
matched along the known epipolar lines (``--init.matching epipolar --init.sift-upscale 2``): at the papers'
protocol (10k steps) that took fern 3 views from 374 points and 18.89 dB to 3,585 points and 20.91 dB,
and gave lego, mic and DTU enough points to start from SfM rather than plane-sweep matches. Densification in the preset also prunes what no
training render drew since the last refinement (``--densify.prune-unseen``): no loss term reaches such
Gaussians, and on DTU scan24 (3 views) they hung in front of the test cameras. The needle penalty
(``--priors.needles.enabled True``) is not in the preset: it bounded the largest-to-middle scale ratio
there (median 8.3 and 1% above 10 at step 5,678, against a median of 28 and 62% above 10 at the end of
the run without it) but left the test views where they were (8.87 / 8.69 dB at steps 2k / 4k against
8.94 / 8.42). The first version of the preset (a constant
rate of 0.1 and 3DGS's densification) ended 0.6 dB below vanilla on fern 3 views at the papers'
protocol (17.42 against 18.02 dB, 10k steps, 504x378). At the full schedule (`recon bench quality
--protocol paper --presets sparse-dropout ...`, 10k steps, one thread a run; benchmarks/quality), against
the preset as it was then (the depth loss on every SfM point): without dropout fern 3 views 18.61 /
0.560 against 18.89 / 0.577 and lego 8 views 22.73 / 0.846 against 22.86 / 0.849, so dropout stays; with binocular consistency lego rose to 23.26 / 0.858
(+0.40 dB, 1.85x the training time) and with pseudo views to 23.04 / 0.852 (+0.18, 1.17x); against
the current preset binocular gives lego +0.29 and flower +0.05 but costs fern 0.47 (20.62 against
21.09), and pseudo views cost fern 0.48, so neither is in the preset; without the SfM depth loss lego rose to
23.17 / 0.852 (+0.31): its 82 SIFT points, the ones the init refused as too few, were worse than no
depth, so the loss now needs as many points as the init does (``SfmDepthConfig.min_points``, 200 in the preset). Measured with
`recon bench priors` at short budgets (CPU,
3 seeds; fern 3 views at 126 px and 200 steps, lego 8 views at 100 px and 500 steps): the dense
initialization carried the gain there (fern +5.0 dB alone; lego +10.6 dB, where SIFT finds no
triangulable matches at 100 px and vanilla falls back to random points: the fallback case the preset
keeps it for); SfM depth +0.6 on fern; pseudo views (+0.25 fern, -0.2 lego) and binocular
consistency (0 fern, +0.35 lego) within a few tenths; dropout slightly negative at those budgets.
They are not in the preset because their extra renders (one more view every step or two) would make
the 10k schedule several hours on 2 cores for gains within noise, and because a dense start grows
several times more Gaussians (17.6k at 504x378 on fern, 51k by step 1000) and was where a real
capture's run collapsed. Each stays one flag away (``--priors.binocular.enabled True``,
``--priors.pseudo-views.enabled True``, ``--init.kind dense``). Monocular depth and diffusion need
weights that these machines cannot download, so the preset leaves them off
(``--priors.mono-depth.enabled True``, ``--priors.diffusion.enabled True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from reconstruct.priors.config import PriorsConfig

if TYPE_CHECKING:
    from reconstruct.config import InitConfig
    from reconstruct.splatting import SplatMethod


def attach_priors(method: "SplatMethod", priors: PriorsConfig, cache_dir: Path, *, seed: int,
                  init: "InitConfig | None" = None) -> list[str]:
    """Wire every enabled prior into ``method``; returns the names attached. ``init``: how the run
    triangulates (matcher, SIFT scale) when the SfM depth prior needs points that the initialization
    did not make (a random or .ply start); None = the vanilla preset's triangulation."""
    attached = []
    if priors.sfm_depth.enabled:
        from reconstruct.priors.depth import SfmDepthLoss, sfm_depth_targets

        if method.sfm_points is None:
            from reconstruct.config import InitConfig
            from reconstruct.init import triangulate_training_views

            method.sfm_points = triangulate_training_views(init or InitConfig(), method.scene, method.train_ids)[0]
        n_points, least = len(method.sfm_points), priors.sfm_depth.min_points
        assert least is not None, "resolve the config first"
        if n_points >= least:
            targets = sfm_depth_targets(method.sfm_points, method.scene, method.train_ids, priors.sfm_depth,
                                        method.device)
            method.regularizers.append(SfmDepthLoss(priors.sfm_depth, targets))
            attached.append("sfm_depth")
        else:
            method.init_record["sfm_depth"] = f"off ({n_points} < {least} triangulated points)"
    if priors.dropout.enabled:
        from reconstruct.priors.dropout import GaussianDropout

        method.modifiers.append(GaussianDropout(priors.dropout, seed, total_steps=method.total_steps))
        attached.append("dropout")
    if priors.binocular.enabled:
        from reconstruct.priors.binocular import BinocularLoss

        method.regularizers.append(BinocularLoss(priors.binocular))
        attached.append("binocular")
    if priors.pseudo_views.enabled:
        from reconstruct.priors.pseudo import PseudoViewLoss

        method.regularizers.append(PseudoViewLoss(priors.pseudo_views))
        attached.append("pseudo_views")
    if priors.mono_depth.enabled:
        from reconstruct.priors.depth import MonoDepthLoss, predict_mono_depth

        preds = predict_mono_depth(method.scene, method.train_ids, priors.mono_depth, cache_dir)
        if preds is not None:
            method.regularizers.append(MonoDepthLoss(priors.mono_depth, preds, method.device, seed))
            attached.append("mono_depth")
    if priors.needles.enabled:
        from reconstruct.priors.needles import NeedleLoss

        method.regularizers.append(NeedleLoss(priors.needles))
        attached.append("needles")
    if priors.diffusion.enabled:
        from reconstruct.priors.diffusion import attach_diffusion

        if attach_diffusion(method, priors.diffusion, seed) is not None:
            attached.append("diffusion")
    return attached
