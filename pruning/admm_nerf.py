"""ADMM saliency-grid pruning applied to the project's hash-grid NeRF (reconstruct/nerf).

``GatedEncoding`` wraps the field's HashEncoding: ``encoding(u) * s(u)`` with s the saliency
grid trilinearly sampled at u (HollowNeRF's gating of the hash features). ``admm_finetune``
continues a finished NeRF run with the gate and the ADMM pruner: the augmented-Lagrangian
gradient ``rho (s - Z + U) s (1 - s)`` is added to the grid's gradient by a tensor hook (the same
as adding ``rho/2 ||s - Z + U||^2`` to the loss, without touching the NeRF trainer's loop), and
Z/U are updated every ``update_every`` steps. Afterwards pruned cells are gated to exactly 0,
the hash entries read only from pruned space are counted (and zeroed, to show they are unused),
and the test views are scored before and after.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time

import torch
import torch.nn.functional as F

from pruning.admm import ADMMConfig, ADMMPruner, SaliencyGrid, hash_usage
from scenes.errors import ReconError
from scenes.fileio import atomic_write_bytes

_PRIME_Y = 2654435761
_PRIME_Z = 805459861
_MASK32 = 0xFFFFFFFF


class GatedEncoding(torch.nn.Module):
    """HashEncoding gated by a SaliencyGrid: forward(u [N, 3] in [0, 1]) -> [N, L*F] * s(u)."""

    def __init__(self, inner: torch.nn.Module, grid: SaliencyGrid) -> None:
        super().__init__()
        self.inner, self.grid = inner, grid
        self.config, self.layout = inner.config, inner.layout

    @property
    def params(self) -> torch.Tensor:
        return self.inner.params  # type: ignore[return-value]

    @property
    def n_output_dims(self) -> int:
        return int(self.inner.n_output_dims)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, level_mask: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.inner(x, level_mask)
        return feats * self.grid(x.float().clamp(0.0, 1.0))[:, None].to(feats.dtype)


def corner_index(layout, level: int, v: torch.Tensor) -> torch.Tensor:
    """Table index (within the level) of integer corners v [M, 3], as reconstruct.nerf.hash_encoding."""
    size = int(layout.sizes[level])
    if layout.dense[level]:
        r = int(layout.resolutions[level])
        idx = v[:, 0] + v[:, 1] * r + v[:, 2] * (r * r)
    else:
        idx = v[:, 0] ^ ((v[:, 1] * _PRIME_Y) & _MASK32) ^ ((v[:, 2] * _PRIME_Z) & _MASK32)
    return idx % size


def active_cells(kept: torch.Tensor) -> torch.Tensor:
    """[R, R, R] cells where the trilinear gate can be nonzero: kept cells grown by one cell."""
    k = kept.float()[None, None]
    return F.max_pool3d(k, kernel_size=3, stride=1, padding=1)[0, 0] > 0


def _level_lo_hi(level_scale: float, R: int):
    # A sample u in saliency cell c reads corners floor(u * scale + 0.5) + {0, 1}: over the cell
    # that is floor(c/R*scale + 0.5) .. floor((c+1)/R*scale + 0.5) + 1, per axis.
    return lambda cells: (torch.floor(cells / R * level_scale + 0.5).long(),
                          torch.floor((cells + 1) / R * level_scale + 0.5).long() + 1)


@torch.no_grad()
def used_entries(encoding, active: torch.Tensor) -> list[torch.Tensor]:
    """Per level, [size_l] bool: the table entries some sample inside ``active`` [R, R, R] reads."""
    layout = encoding.layout
    R = active.shape[0]
    masks = []
    for level, s in enumerate(float(v) for v in layout.scales):
        used = torch.zeros(int(layout.sizes[level]), dtype=torch.bool)

        def mark(_l, v, lv=level, used=used):
            idx = corner_index(layout, lv, v)
            used[idx.cpu()] = True
            return idx

        hash_usage(active, [1], [used.numel()], mark, lo_hi=_level_lo_hi(s, R))
        masks.append(used)
    return masks


def hash_entries_in_use(encoding, active: torch.Tensor) -> dict:
    """Entries of each level read by samples inside ``active`` cells; totals in parameters."""
    layout = encoding.layout
    n_feat = encoding.config.features_per_level
    per_level = [{"level": level, "used": int(m.sum()), "size": int(m.numel()), "dense": bool(layout.dense[level])}
                 for level, m in enumerate(used_entries(encoding, active))]
    used_params = sum(p["used"] for p in per_level) * n_feat
    total_params = sum(p["size"] for p in per_level) * n_feat
    return {"per_level": per_level, "used_params": used_params, "total_params": total_params,
            "droppable_params": total_params - used_params, "fraction_in_use": used_params / max(total_params, 1)}


@torch.no_grad()
def zero_unused_entries(encoding, active: torch.Tensor) -> int:
    """Zero the hash entries no active cell reads (returns how many entries were zeroed)."""
    layout = encoding.layout
    table = encoding.params.view(-1, encoding.config.features_per_level)
    zeroed = 0
    for level, used in enumerate(used_entries(encoding, active)):
        rows = torch.nonzero(~used).reshape(-1) + int(layout.offsets[level])
        table[rows.to(table.device)] = 0.0
        zeroed += int(rows.numel())
    return zeroed


@torch.no_grad()
def fold_table(src, dst, active: torch.Tensor) -> None:
    """Warm-start ``dst`` (a HashEncoding with the same levels, tables no larger) from ``src``.

    Each destination entry becomes the mean of the source entries that land on it, counting only
    entries read from ``active`` [R, R, R] space when there are any (so empty space does not blur
    the surface). Hashed levels: with power-of-two tables ``h mod T_dst == (h mod T_src) mod T_dst``,
    so source entry i lands on i mod T_dst. Dense source levels: every corner is enumerated and
    indexed in both layouts (a level dense in ``src`` may be hashed in ``dst``).
    """
    sl, dl = src.layout, dst.layout
    assert len(sl.sizes) == len(dl.sizes) and src.config.features_per_level == dst.config.features_per_level
    n_feat = src.config.features_per_level
    s_tab = src.params.detach().view(-1, n_feat).cpu().double()
    d_tab = dst.params.view(-1, n_feat)
    used = used_entries(src, active)
    for level in range(len(sl.sizes)):
        s_lo, d_lo = int(sl.offsets[level]), int(dl.offsets[level])
        s_size, d_size = int(sl.sizes[level]), int(dl.sizes[level])
        assert d_size <= s_size, (level, d_size, s_size)
        if sl.dense[level]:
            r = int(sl.resolutions[level])
            ar = torch.arange(r + 1)  # corners reach r at u = 1 (the dense index wraps there)
            v = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3)
            src_idx, dst_idx = corner_index(sl, level, v), corner_index(dl, level, v)
        else:
            assert s_size % d_size == 0, (level, s_size, d_size)
            src_idx = torch.arange(s_size)
            dst_idx = src_idx % d_size
        w = used[level][src_idx].double() + 1e-6  # [M]
        num = torch.zeros(d_size, n_feat, dtype=torch.float64).index_add_(0, dst_idx, s_tab[s_lo + src_idx] * w[:, None])
        den = torch.zeros(d_size, dtype=torch.float64).index_add_(0, dst_idx, w)
        hit = den > 0
        rows = torch.nonzero(hit).reshape(-1)
        d_tab[(d_lo + rows).to(d_tab.device)] = (num[hit] / den[hit, None]).to(d_tab.dtype).to(d_tab.device)


@dataclasses.dataclass
class AdmmNerfConfig:
    """Compressing a NeRF run: a smaller hash table behind the saliency gate, fine-tuned with ADMM."""

    steps: int = 500
    """Fine-tuning steps (HollowNeRF trains with ADMM from the start; a CPU affords a warm-started phase)."""
    table_shrink: int = 2
    """The compressed field's hash tables hold 2**this times fewer entries than the run's (HollowNeRF's
    point: with empty space gated off, the surface alone shares a smaller table). 0 keeps the size, and
    then only the coarse dense levels can lose entries: fine hashed levels have more corners inside the
    object than table slots."""
    gate: bool = True
    """Saliency gate and ADMM pruner on; False is the control: the same smaller, folded table fine-tuned
    for the same steps without them."""
    lr: float = 3e-3
    """Peak learning rate of the phase (100-step warm-up, then decay to 3% of it)."""
    resolution: int = 32
    """Saliency grid cells per side."""
    grid_lr: float = 0.05
    """Adam learning rate of the saliency logits."""
    init_from_density: bool = True
    """Start the saliency high where the run's field has density and low elsewhere (a uniform start
    with a short CPU fine-tuning let the penalty prune every cell: 18.6 -> 8.9 dB on lego)."""
    admm: ADMMConfig = dataclasses.field(default_factory=lambda: ADMMConfig(budget_fraction=0.2, rho=1e-4,
                                                                            update_every=20, prune_threshold=0.05))
    """Budget, penalty and schedule of the ADMM pruner."""


@torch.no_grad()
def _density_logits(field, space, occupancy, R: int, per_cell: int = 4) -> torch.Tensor:
    """[R, R, R] initial saliency logits: +3 where ``field`` has density in the cell (max over random
    samples, the occupancy grid's test: 1 - exp(-sigma * step) > threshold), else -2."""
    device = next(field.parameters()).device
    idx = torch.stack(torch.meshgrid(*(torch.arange(R, device=device),) * 3, indexing="ij"), -1).reshape(-1, 3)
    u = (idx.repeat_interleave(per_cell, 0).float() + torch.rand(idx.shape[0] * per_cell, 3, device=device)) / R
    sig = torch.cat([field.density(space.from_unit(u[a:a + 65536]))[0] for a in range(0, u.shape[0], 65536)])
    alpha = 1.0 - torch.exp(-sig * occupancy.step_size)
    occupied = alpha.view(-1, per_cell).amax(1) > occupancy.threshold
    return torch.where(occupied, 3.0, -2.0).view(R, R, R)


def admm_finetune(method, cfg: AdmmNerfConfig, start: int, init_logits: torch.Tensor | None = None, *,
                  progress: bool = True) -> tuple[SaliencyGrid | None, ADMMPruner | None, list]:
    """Fine-tune ``method`` (a NerfMethod restored from the run at step ``start``) for ``cfg.steps``
    in the one training loop; with ``cfg.gate`` its field's encoding is wrapped in the saliency gate
    and the ADMM pruner drives the gate sparse after every step."""
    from reconstruct.loop import LoopState, train_loop

    device = method.device
    grid = pruner = handle = None
    if cfg.gate:
        grid = SaliencyGrid(cfg.resolution, init_logit=3.0).to(device)
        if init_logits is not None:
            with torch.no_grad():
                grid.logits.copy_(init_logits.to(device))
        method.field.encoding = GatedEncoding(method.field.encoding, grid)
        pruner = ADMMPruner(grid, cfg.admm)
        pruner.Z, pruner.U = pruner.Z.to(device), pruner.U.to(device)
        rho = cfg.admm.rho

        # d/dG of rho/2 ||s - Z + U||^2 added to the gradient the step's backward leaves on G.
        def add_penalty(g: torch.Tensor) -> torch.Tensor:
            s = torch.sigmoid(grid.logits.detach())
            return g + rho * (s - pruner.Z + pruner.U) * s * (1.0 - s)

        handle = grid.logits.register_hook(add_penalty)
        grid_opt = torch.optim.Adam([grid.logits], lr=cfg.grid_lr)

        def after_step(step: int) -> None:
            grid_opt.step()
            grid_opt.zero_grad(set_to_none=True)
            pruner.step(step - start + 1)

        method.after_step.append(after_step)
    method.lr_schedule = (start, start + cfg.steps)  # the phase gets its own warm-up and decay
    every = max(1, cfg.steps // 10)
    state = train_loop(method, LoopState(step=start), until=start + cfg.steps, label="admm" if cfg.gate else "fine-tune",
                       log_every=every, show_progress=progress)
    history = []
    for row in state.history:
        entry = {"step": row["step"] - start, "psnr": row["psnr"]}
        history.append(entry)
    if grid is not None and pruner is not None:
        s = grid.saliency().detach()
        history[-1].update(l1=float(s.sum()), budget=pruner.budget, kept=int(pruner.kept_cells().sum()))
    if handle is not None:
        handle.remove()
    return grid, pruner, history


def compress_nerf_run(run, *, seed: int = 0, progress: bool = True, cfg: AdmmNerfConfig | None = None) -> dict:
    """`recon compress RUN --admm` on a NeRF run (HollowNeRF's recipe, warm-started from the run).

    1. The run's field is scored on the test views; its occupied space (density test on a coarse grid)
       seeds the saliency logits.
    2. A field with 2**table_shrink times smaller hash tables gets the run's MLPs and occupancy grid and a
       folded copy of its table (``fold_table``).
    3. Fine-tuning with the saliency gate and the ADMM pruner (or, with ``gate=False``, without them: the
       control); pruned cells then gate to exactly 0, entries only pruned space reads are zeroed.
    4. Scored again; report.json and saliency.pt (gate and compressed field) replace RUN/compressed/.
    """
    from reconstruct.nerf.method import NerfMethod, evaluate_nerf, field_from_state
    from reconstruct.run import resolve_device

    cfg = cfg or AdmmNerfConfig()
    train_cfg = run.nerf_config
    device = resolve_device(train_cfg.device)
    scene = run.scene()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    ckpt = run.checkpoint()
    field0, grid0 = field_from_state(ckpt["state"], device, implementation=train_cfg.nerf.encoding)
    log2_run = int(field0.config.grid.log2_hashmap_size)
    if not 0 <= cfg.table_shrink <= log2_run - 4:
        raise ReconError(run.root, f"--admm-table-shrink {cfg.table_shrink}: the run's table has 2^{log2_run} "
                                   f"entries per level; use 0..{log2_run - 4}")
    n_samples = int(ckpt["state"]["n_samples"])
    before = evaluate_nerf(field0, grid0, scene, n_samples=n_samples)
    ncfg = dataclasses.replace(train_cfg.nerf, log2_hashmap_size=log2_run - cfg.table_shrink, lr=cfg.lr)
    method = NerfMethod(train_cfg, scene, device, ncfg)
    method.load_state_dict(ckpt["state"], strict=False)
    # The run's field seeds the saliency and the folded table (the method's occupancy grid is the run's,
    # with the run's step size and threshold).
    init_logits = _density_logits(field0, method.space, method.grid, cfg.resolution) if cfg.init_from_density else None
    seed_active = active_cells(init_logits > 0) if init_logits is not None else torch.ones((cfg.resolution,) * 3, dtype=torch.bool)
    fold_table(field0.encoding, method.field.encoding, seed_active.cpu())
    n_params_run = sum(p.numel() for p in field0.parameters())
    hash_params_run = field0.encoding.params.numel()
    t1 = time.perf_counter()
    grid, pruner, history = admm_finetune(method, cfg, int(ckpt["step"]), init_logits, progress=progress)
    finetune_seconds = time.perf_counter() - t1
    if grid is not None and pruner is not None:
        kept = pruner.kept_cells()
        grid.prune(kept)  # pruned cells gate to exactly zero
    else:
        kept = torch.ones((cfg.resolution,) * 3, dtype=torch.bool, device=device)
    active = active_cells(kept).cpu()
    usage = hash_entries_in_use(method.field.encoding, active)
    run_table_usage = hash_entries_in_use(field0.encoding, active)  # the same cells on the run's table
    zeroed = zero_unused_entries(method.field.encoding, active)
    method.field.eval()
    after = evaluate_nerf(method.field, method.grid, scene, n_samples=n_samples)
    mlp_params = sum(p.numel() for n, p in method.field.named_parameters() if not n.startswith("encoding."))
    n_params_after = usage["used_params"] + mlp_params + (int(kept.sum()) if grid is not None else 0)
    report = {
        "run": str(run.root), "method": "nerf", "admm": bool(cfg.gate),
        "psnr_before": before["psnr"], "ssim_before": before["ssim"], "psnr_after": after["psnr"],
        "ssim_after": after["ssim"], "n_test": before["n_test"],
        "log2_table_run": log2_run, "log2_table": log2_run - cfg.table_shrink,
        "grid_resolution": cfg.resolution, "cells_kept": int(kept.sum()), "cells_total": int(kept.numel()),
        "hash_params_run": hash_params_run, "hash_params_total": usage["total_params"],
        "hash_params_in_use": usage["used_params"], "hash_params_droppable": hash_params_run - usage["used_params"],
        "fraction_in_use": usage["used_params"] / hash_params_run,
        "fraction_of_table_in_use": usage["fraction_in_use"],
        "run_table_fraction_in_use": run_table_usage["fraction_in_use"],
        "n_params_run": n_params_run, "n_params_after": n_params_after,
        "entries_zeroed": zeroed, "per_level": usage["per_level"], "history": history,
        "finetune_seconds": finetune_seconds, "seconds": time.perf_counter() - t0,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
    }
    saved = {"logits": None if grid is None else grid.logits.detach().cpu(), "kept": kept.cpu(),
             "resolution": cfg.resolution, **{k: v for k, v in method.state_dict().items() if k != "optimizer"}}
    with run.new_compressed() as out_dir:
        buf = io.BytesIO()
        torch.save(saved, buf)
        atomic_write_bytes(out_dir / run.SALIENCY, buf.getvalue())
        run.write_json(out_dir / run.REPORT, report)
    return report


def load_compressed_nerf(run, device: torch.device | None = None):
    """(field, occupancy grid, n_samples) of RUN/compressed/saliency.pt: the smaller table behind its
    gate (when it was compressed with one), pruned cells gated to exactly 0 - what
    `recon compress --admm` scored."""
    from reconstruct.nerf.field import FieldConfig, NerfField, SceneSpace
    from reconstruct.nerf.hash_encoding import HashGridConfig
    from reconstruct.nerf.sampler import OccupancyGrid

    device = device or torch.device("cpu")
    path = run.saliency_path
    if not path.is_file():
        raise ReconError(path, "no compressed NeRF here (run `recon compress RUN --admm` first)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - refused or truncated: a bad file either way
        raise ReconError(path, f"unreadable compressed NeRF ({type(err).__name__})") from None
    fc = saved["field_config"]
    field = NerfField(FieldConfig(**{**fc, "grid": HashGridConfig(**fc["grid"])}), SceneSpace.from_dict(saved["space"]),
                      implementation=run.nerf_config.nerf.encoding).to(device)
    if saved["logits"] is not None:
        gated = GatedEncoding(field.encoding, SaliencyGrid(int(saved["resolution"])).to(device))
        field.encoding = gated  # type: ignore[assignment]
    field.load_state_dict({k: v.to(device) for k, v in saved["field"].items()})
    occ = saved["grid"]
    grid = OccupancyGrid(int(occ["resolution"]), step_size=1.0, device=device)
    grid.load_state_dict(occ)
    return field.eval(), grid, int(saved["n_samples"])
