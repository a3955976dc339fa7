"""Training hooks: curves, checkpoints, the progress bar, the live viewer; and run outputs."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from reconstruct.train import StepResult, Trainer


class HistoryHook:
    """Records loss / training-view PSNR / Gaussian count every ``log_every`` steps."""

    def on_step(self, trainer: Trainer, r: StepResult) -> None:
        if r.step % trainer.cfg.output.log_every == 0 or trainer.step == trainer.cfg.optim.iters:
            trainer.history.append({"step": r.step, "loss": r.loss, "psnr": r.psnr, "n": r.n_gaussians, **r.terms})

    def on_end(self, trainer: Trainer) -> None:
        pass


class CheckpointHook:
    """Atomic checkpoint every ``checkpoint_every`` steps and at the end."""

    def on_step(self, trainer: Trainer, r: StepResult) -> None:
        if trainer.step % trainer.cfg.output.checkpoint_every == 0:
            trainer.save_checkpoint()

    def on_end(self, trainer: Trainer) -> None:
        trainer.save_checkpoint()


class ProgressHook:
    """A rich progress bar: step, loss, training-view PSNR, Gaussians, steps/s."""

    def __init__(self, trainer: Trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), transient=False,
        )
        self.task = self.progress.add_task("train", total=trainer.cfg.optim.iters, completed=trainer.step, stats="")
        self.t0, self.s0 = time.perf_counter(), trainer.step

    def __enter__(self) -> "ProgressHook":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def on_step(self, trainer: Trainer, r: StepResult) -> None:
        if r.step % 10 and trainer.step != trainer.cfg.optim.iters:
            return
        rate = (trainer.step - self.s0) / max(time.perf_counter() - self.t0, 1e-9)
        stats = f"loss {r.loss:.4f}  psnr {r.psnr:5.2f}  gaussians {r.n_gaussians:,}  {rate:.1f} steps/s"
        self.progress.update(self.task, completed=trainer.step, stats=stats)

    def on_end(self, trainer: Trainer) -> None:
        self.progress.update(self.task, completed=trainer.step)


def viewer_hook(trainer: Trainer):
    """The live viser viewer as a hook (viewer package)."""
    from viewer.live import LiveViewerHook

    return LiveViewerHook(trainer, host=trainer.cfg.viewer_host, port=trainer.cfg.viewer_port)


def export_splats(trainer: Trainer) -> Path:
    """Write RUN/splats.ply (standard 3DGS layout) from the trainer's parameters."""
    from pruning.formats import write_splats
    from reconstruct.splats import Splats

    params = {k: v for k, v in trainer.params.items() if k in ("means", "quats", "scales", "opacities", "sh0", "shN")}
    path = trainer.run_dir / "splats.ply"
    write_splats(path, Splats.from_params(params), format="ply")
    return path


def print_metrics(result: dict, *, title: str, file) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in ("psnr", "ssim", "lpips", "n_test", "n_gaussians", "train_seconds", "render_fps", "ply_bytes"):
        if key in result:
            value = result[key]
            text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else f"{value:,}")
            table.add_row(key, text)
    console = Console(file=file)
    console.print(table)
    if result.get("lpips") is None and result.get("lpips_reason"):
        console.print(f"lpips n/a: {result['lpips_reason']}", soft_wrap=True)
