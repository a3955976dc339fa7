"""`recon compress RUN`: mask fine-tuning, codebook fine-tuning, the compact artifact and a report.

Phases on a finished splat run (each optional; with no flag given, masks and codebooks both run):

1. masks: learnable masks fine-tuned for ``mask_steps`` (pruning.masks), masked Gaussians removed;
2. quantize: ``codebooks="sog"`` (the default) fine-tunes with every attribute as PlayCanvas SOG
   stores it (pruning.sog_quantize: 16-bit log positions, smallest-three rotations, 256-entry
   scale and color codebooks, an SH palette) for ``quantize_steps``; ``"rvq"`` fine-tunes the
   RVQ scale/rotation + k-means color codebooks of pruning.quantize;
3. RUN/compressed/scene.sog is written (with "sog" codebooks: from the fine-tuned codes, nothing
   quantized again, so the file a player opens is the state that was fine-tuned; otherwise SOG's
   quantization of the decoded artifact), read back with our reader and scored on the test views.
   The artifact RUN/compressed/ (pruning.artifact; with "sog" codebooks it holds the same values
   losslessly) is written, decoded back and scored, so "after" is what a reader of the artifact
   gets. The decoded splats are also exported as a PlayCanvas compressed .ply.

Both fine-tuning phases train on the run's photos plus teacher views (pruning.teacher: the
uncompressed splats' renders between and just beyond neighbouring training cameras), so a sparse-view
run keeps what only its novel views see.

The report (RUN/compressed/report.json) holds Gaussians, bytes and PSNR/SSIM before and after.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from typing import Literal

from pruning.quantize import QuantizeConfig
from pruning.sog_quantize import SogQuantizeConfig
from scenes.errors import ReconError


SOG_FILE = "scene.sog"
"""The player file `recon compress` writes into its output folder (RUN/compressed/)."""


@dataclass
class CompressConfig:
    """What `recon compress` does to a run."""

    masks: bool = True
    """Fine-tune learnable masks and remove masked Gaussians."""
    quantize: bool = True
    """Codebook fine-tuning and a quantized artifact (else the artifact stores float16 attributes)."""
    mask_steps: int = 600
    """Mask fine-tuning steps (Compact 3DGS trains masks for the whole 30k-step run on a GPU; a
    short fine-tuning phase is what a 2-core CPU affords)."""
    mask_lambda: float = 0.07
    """Mask loss weight. Compact 3DGS uses 5e-4 with masks trained over a whole 30k-step run; in a
    150-step fine-tuning of a lego run that removed nothing, 0.02 removed 56%. With teacher views
    (fern 3 views, 504x378, the sparse run's step-4000 state of 29,985 splats, 300 mask steps): 0.06 kept 37% at -0.04 dB / -0.007 SSIM,
    0.15 kept 14% at +0.02 dB / -0.020 SSIM on the test views. On the final states of the protocol runs
    (400 + 400 steps, SOG codebooks): 0.1 kept 11% of fern at +0.06 dB but 8% of lego at -0.57 dB;
    0.05 kept 21% of lego at -0.005 dB (87.6x); 0.07 kept 18% of fern at +0.14 dB (99.3x smaller than
    the .ply) and 14% of lego at -0.24 dB (118.1x)."""
    mask_lr: float = 0.1
    """Adam learning rate of the mask logits (Compact 3DGS: 0.01 over a 30k-step run; a short
    fine-tuning phase needs a faster rate to move a logit from on (2) to off (-4.6) at all)."""
    mask_prune_every: int = 100
    """Remove masked Gaussians every this many steps (and at the last step)."""
    quantize_steps: int = 600
    """Codebook fine-tuning steps (a few thousand on a GPU)."""
    lr_scale: float = 0.1
    """Learning rates of the splat attributes in the fine-tuning phases, relative to the run's
    (positions at the run's final rate); mask logits and codebooks keep their own. At the run's rates
    (1.0) 300 plain steps on fern 3 views cost 0.10 dB (the views overfit without the run's priors);
    at 0.1 they cost nothing (+0.02)."""
    codebooks: Literal["sog", "rvq"] = "sog"
    """What the codebook phase trains: "sog" = SOG's own quantization (scene.sog is the fine-tuned
    state), "rvq" = RVQ scale/rotation and k-means color codebooks for the artifact."""
    quant: QuantizeConfig = field(default_factory=QuantizeConfig)
    """Codebook sizes of the "rvq" codebooks."""
    sog: SogQuantizeConfig = field(default_factory=SogQuantizeConfig)
    """The "sog" codebooks (SH palette size, EMA)."""
    teacher_views: int = 4
    """Teacher views per pair of neighbouring training cameras (pruning.teacher): the run's own renders
    between and just beyond its training cameras join the training photos in the fine-tuning phases,
    so what only novel views see is kept. 0 = the training photos alone."""
    device: str = "auto"
    """auto = the accelerator when there is one, else CPU."""
    seed: int = 0
    """Seed of the view order and the k-means initializations."""
    progress: bool = True
    """Show progress bars (on stderr)."""
    export_compressed_ply: bool = True
    """Also write RUN/compressed/splats.compressed.ply from the decoded artifact."""
    export_sog: bool = True
    """Write RUN/compressed/scene.sog (PlayCanvas SOG v2), read it back with our reader and score it on
    the test views (what a SOG player shows). Always written with "sog" codebooks."""
    admm_steps: int = 500
    """ADMM fine-tuning steps (NeRF runs)."""
    admm_table_shrink: int = 2
    """NeRF runs: the compressed hash tables hold 2**this times fewer entries than the run's (0 keeps
    the size; then only the coarse dense levels can lose entries)."""
    admm_budget: float = 0.2
    """ADMM L1 budget as a fraction of the saliency-grid cells (NeRF runs). 0.1 pruned content on the
    demo scene (-0.44 dB); 0.2 was better on lego, fern and the demo, at 21-27% of the hash parameters."""


def _score(splats, scene, device) -> dict:
    from reconstruct.evaluate import evaluate

    r = evaluate(splats, scene, device=device, with_lpips=False)
    return {"psnr": r["psnr"], "ssim": r["ssim"], "n_test": r["n_test"]}


def _finetune(splats, scene, cfg: CompressConfig, steps: int, *, optim, loss, device, seed: int,
              frozen: tuple[str, ...] = ()):
    from reconstruct.splatting import finetune_method

    return finetune_method(splats, scene, optim=optim, loss=loss, steps=steps, seed=seed, device=device,
                           lr_scale=cfg.lr_scale, frozen=frozen)


def _run(method, steps: int, label: str, cfg: CompressConfig) -> list:
    from reconstruct.loop import LoopState, train_loop

    state = train_loop(method, LoopState(), until=steps, label=label, log_every=max(1, steps // 10),
                       show_progress=cfg.progress)
    return state.history


def mask_phase(splats, scene, cfg: CompressConfig, *, optim, loss, device) -> tuple:
    """Fine-tune learnable masks on ``splats`` and remove the masked ones: (splats, history)."""
    from pruning.masks import MaskStrategy, attach_masks

    method = _finetune(splats, scene, cfg, cfg.mask_steps, optim=optim, loss=loss, device=device, seed=cfg.seed)
    attach_masks(method, MaskStrategy(lambda_mask=cfg.mask_lambda, lr=cfg.mask_lr, prune_every=cfg.mask_prune_every,
                                      final_step=cfg.mask_steps - 1))
    history = _run(method, cfg.mask_steps, "masks", cfg)
    return method.model.splats(), history


def plain_phase(splats, scene, cfg: CompressConfig, steps: int, *, optim, loss, device) -> tuple:
    """The same fine-tuning without masks or codebooks (the control): (splats, history)."""
    method = _finetune(splats, scene, cfg, steps, optim=optim, loss=loss, device=device, seed=cfg.seed)
    history = _run(method, steps, "finetune", cfg)
    return method.model.splats(), history


def quantize_phase(splats, scene, cfg: CompressConfig, *, optim, loss, device) -> tuple:
    """Codebooks in the loop on ``splats``: (CompactSplats, history, codebook sizes)."""
    from pruning.quantize import SplatQuantizer

    method = _finetune(splats, scene, cfg, cfg.quantize_steps, optim=optim, loss=loss, device=device, seed=cfg.seed + 1)
    quantizer = SplatQuantizer(method.model.params, cfg.quant)
    method.model.freeze(tuple(quantizer.books))  # the colors come from the codebooks now
    method.modifiers.append(quantizer.modifier)
    method.after_step.append(quantizer.after_step)
    history = _run(method, cfg.quantize_steps, "codebooks", cfg)
    sizes = {"scale": [quantizer.scale_rvq.stages, quantizer.scale_rvq.entries],
             "rotation": [quantizer.rot_rvq.stages, quantizer.rot_rvq.entries],
             **{name: int(b.entries.shape[0]) for name, b in quantizer.books.items()}}
    return quantizer.encode(method.model.params), history, sizes


def sog_phase(splats, scene, cfg: CompressConfig, *, optim, loss, device) -> tuple:
    """SOG's quantization in the loop on ``splats``: (SogData of the fine-tuned state, history, sizes)."""
    from pruning.sog_quantize import SogQuantizer

    method = _finetune(splats, scene, cfg, cfg.quantize_steps, optim=optim, loss=loss, device=device,
                       seed=cfg.seed + 1, frozen=SogQuantizer.frozen)
    quantizer = SogQuantizer(method.model.params, cfg.sog)
    method.modifiers.append(quantizer.modifier)
    method.after_step.append(quantizer.after_step)
    history = _run(method, cfg.quantize_steps, "sog codebooks", cfg)
    data = quantizer.encode(method.model.params)
    sizes = {"scales": len(data.scales_codebook), "sh0": len(data.sh0_codebook),
             "shN_palette": 0 if data.shN_palette is None else len(data.shN_palette)}
    return data, history, sizes


def _max_error(a, b) -> float:
    """Largest absolute difference over every attribute of two splat sets in the same order."""
    import numpy as np

    fields = ("means", "quats", "log_scales", "opacities", "sh0", "shN")
    return max(float(np.abs(getattr(a, f).astype(np.float64) - getattr(b, f)).max(initial=0.0)) for f in fields)


def compress_splats(splats, scene, out_dir: Path, cfg: CompressConfig, *, optim=None, loss=None,
                    before: dict | None = None) -> dict:
    """Run the phases on ``splats`` trained on ``scene``; write the artifact into ``out_dir``.

    ``before``: scores of ``splats`` already computed (psnr, ssim, n_test), to skip re-rendering.
    Returns the report dict.
    """
    from pruning.artifact import CompactSplats, artifact_bytes, load_artifact, save_artifact
    from pruning.orient import player_orientation, scene_in_player_frame, to_player_frame
    from pruning.teacher import with_teacher_views
    from reconstruct.config import LossConfig, OptimConfig
    from reconstruct.run import resolve_device

    device = resolve_device(cfg.device)
    kw = dict(optim=optim or OptimConfig(), loss=loss or LossConfig(), device=device)
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    report: dict = {"n_before": len(splats), "sh_degree": splats.sh_degree, "masks": cfg.masks,
                    "quantize": cfg.quantize, "device": str(device)}
    before = before or _score(splats, scene, device)
    report.update(psnr_before=before["psnr"], ssim_before=before["ssim"], n_test=before["n_test"])
    history, timings = {}, {}
    t0 = time.perf_counter()
    train_scene = with_teacher_views(scene, splats, views_per_pair=cfg.teacher_views, device=device)
    report["n_teacher_views"] = len(train_scene.train_ids) - len(scene.train_ids)
    timings["teacher_seconds"] = time.perf_counter() - t0
    if cfg.masks:
        t0 = time.perf_counter()
        splats, history["masks"] = mask_phase(splats, train_scene, cfg, **kw)
        timings["masks_seconds"] = time.perf_counter() - t0
    report["n_after"] = len(splats)
    sog_data = player_decoded = None
    orientation = player_orientation("auto", scene=scene)
    player_scene = scene_in_player_frame(scene, orientation)
    report["up_world"] = None if orientation.up_world is None else orientation.up_world.tolist()
    if cfg.quantize and cfg.codebooks == "sog":
        from pruning.sog_quantize import sog_compact

        # SOG's codes are per axis: the phase runs with splats and cameras turned into the file's
        # frame (renders are unchanged by a joint rotation), so the file needs no second quantization.
        t0 = time.perf_counter()
        sog_data, history["codebooks"], report["codebooks"] = sog_phase(
            to_player_frame(splats, orientation), scene_in_player_frame(train_scene, orientation), cfg, **kw)
        timings["quantize_seconds"] = time.perf_counter() - t0
        player_decoded = sog_data.decode()
        compact = sog_compact(sog_data, R_world_file=None if orientation.kept else orientation.R_file_world.T)
    elif cfg.quantize:
        t0 = time.perf_counter()
        compact, history["codebooks"], report["codebooks"] = quantize_phase(splats, train_scene, cfg, **kw)
        timings["quantize_seconds"] = time.perf_counter() - t0
    else:
        compact = CompactSplats.from_splats(splats)
    save_artifact(out_dir, compact)
    report["artifact_bytes"] = artifact_bytes(out_dir)
    decoded = load_artifact(out_dir)
    after = _score(decoded, scene, device)
    report.update(psnr_after=after["psnr"], ssim_after=after["ssim"])
    report["compressed_ply_bytes"] = None
    if cfg.export_compressed_ply:
        from pruning.orient import write_player_file

        path, _ = write_player_file(out_dir / "splats.compressed.ply", decoded, format="compressed-ply",
                                    orientation=orientation)  # upright, as every player file
        report["compressed_ply_bytes"] = path.stat().st_size
    report["sog_bytes"] = None
    if cfg.export_sog or sog_data is not None:
        from pruning.formats import read_splats, sog
        from pruning.orient import write_player_file

        t0 = time.perf_counter()
        if sog_data is not None:  # fine-tuned in the player frame: the codes are the file
            path = sog.write_data(out_dir / SOG_FILE, sog_data)
            back, sog_scene = read_splats(path), player_scene
        else:
            path, back = write_player_file(out_dir / SOG_FILE, decoded, format="sog", orientation=orientation)
            sog_scene = scene
        timings["sog_seconds"] = time.perf_counter() - t0
        scored = _score(back, sog_scene, device)
        report.update(sog_bytes=path.stat().st_size, sog_bytes_per_splat=path.stat().st_size / max(len(decoded), 1),
                      psnr_sog=scored["psnr"], ssim_sog=scored["ssim"], sog_trained=sog_data is not None)
        if sog_data is not None:  # the file holds the fine-tuned values: rows in texel order, compare as sets
            report["sog_max_error"] = _max_error(*_same_order(back, player_decoded))
    timings["total_seconds"] = time.perf_counter() - t_start
    report.update(timings=timings, history=history, config=json.loads(json.dumps(dataclasses.asdict(cfg), default=str)))
    return report


def _same_order(a, b) -> tuple:
    """``a`` and ``b`` (the same splats in two orders) both sorted by position."""
    import numpy as np

    def sort(s):
        return s.subset(np.lexsort(s.means.T[::-1]))

    return sort(a), sort(b)


def compress_run(run, cfg: CompressConfig, *, admm: bool = False, auto: bool = False) -> dict:
    """Compress a ``reconstruct.run.Run``: a whole new RUN/compressed/ (artifact, report.json,
    compressed .ply) is written beside the old one and swapped in when complete.

    ``auto``: no technique was named; use what fits the run (ADMM for NeRF, cfg's phases for splats)."""
    train_cfg = run.config
    if train_cfg.method == "nerf":
        if not (admm or auto):
            raise ReconError(run.root, "a NeRF run compresses with --admm (masks and codebooks are for splat runs)")
        from pruning.admm import ADMMConfig
        from pruning.admm_nerf import AdmmNerfConfig, compress_nerf_run

        acfg = AdmmNerfConfig(steps=cfg.admm_steps, table_shrink=cfg.admm_table_shrink)
        acfg.admm = ADMMConfig(**{**dataclasses.asdict(acfg.admm), "budget_fraction": cfg.admm_budget})
        return compress_nerf_run(run, seed=cfg.seed, progress=cfg.progress, cfg=acfg)
    if admm:
        raise ReconError(run.root, "--admm prunes hash-grid NeRF runs; this is a splat run (use --masks/--quantize)")
    scene, splats = run.scene(), run.splats()
    train_cfg = run.splat_config
    with run.new_compressed() as out_dir:
        report = compress_splats(splats, scene, out_dir, cfg, optim=train_cfg.optim, loss=train_cfg.loss)
        report["ply_bytes"] = run.splats_path.stat().st_size
        report["ratio"] = report["ply_bytes"] / max(report["artifact_bytes"], 1)
        if report.get("sog_bytes"):
            report["sog_ratio"] = report["ply_bytes"] / report["sog_bytes"]
        report["run"] = str(run.root)
        run.write_json(out_dir / run.REPORT, report)
    return report


JSON_KEYS = ("n_before", "n_after", "ply_bytes", "artifact_bytes", "psnr_before", "psnr_after",
             "ssim_before", "ssim_after")
