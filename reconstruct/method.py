"""What a reconstruction method is to the one training loop (``reconstruct.loop``).

A method owns its model and optimizers and does one optimization step at a time; the loop owns
the step counter, history, checkpoints, the NaN guard, progress and hooks. Splats
(``reconstruct.splatting.SplatMethod``) and the hash-grid NeRF (``reconstruct.nerf.method.NerfMethod``)
implement it, and so do the compression fine-tuning phases (a SplatMethod with masks or codebooks
attached, a NerfMethod behind a saliency gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from scenes.types import SceneData


@dataclass
class StepOutput:
    """What one step reports (history rows and the progress bar are made from it)."""

    loss: float
    psnr: float
    """Training-view (or training-ray) PSNR of this step, dB."""
    count: int
    """Gaussians (splats) or parameters (NeRF) after the step."""
    terms: dict[str, float] = field(default_factory=dict)
    """Named extra loss terms and diagnostics."""
    events: dict[str, int] = field(default_factory=dict)
    """Gaussians added or removed in this step, by mechanism (densify_split, densify_pruned,
    mask_removed, ...); the loop records every step that has events."""


def state_to_cpu(state: Any) -> Any:
    """A (nested) state of tensors, dicts, lists and plain data with every tensor detached on the CPU."""
    if torch.is_tensor(state):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: state_to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(state_to_cpu(v) for v in state)
    return state


class NonFiniteError(RuntimeError):
    """A step produced a non-finite loss or gradient (no update was applied), or non-finite
    parameters (``params_corrupted``: the loop restores the last good state)."""

    def __init__(self, message: str, *, params_corrupted: bool = False) -> None:
        super().__init__(message)
        self.params_corrupted = params_corrupted


class Method(Protocol):
    """A trainable scene representation."""

    name: str
    """"splat" or "nerf" (recorded in checkpoints)."""
    scene: SceneData
    """The scene it trains on (training views, cameras, background)."""

    def train_step(self, step: int) -> StepOutput:
        """One optimization step at ``step`` (0-based); raises NonFiniteError instead of applying a
        non-finite update."""
        ...

    def discard_step(self) -> None:
        """Forget the gradients of a failed step."""
        ...

    def render_view(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame ``frame`` of the method's scene: rgb [H, W, 3] in [0, 1] and depth [H, W], CPU."""
        ...

    def state_dict(self) -> dict:
        """Model, optimizer and strategy state as tensors and plain data (CPU)."""
        ...

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        ...

    def stats_text(self, out: StepOutput) -> str:
        """One short line for the progress bar."""
        ...
