"""The one training loop: every method, every fine-tuning phase.

    state = LoopState()
    train_loop(method, state, until=7000, save=run.save_checkpoint, hooks=[viewer_hook])

State flows in and out (``LoopState``: step, seconds, history, failed steps); the loop records
history rows every ``log_every`` steps, writes a checkpoint every ``checkpoint_every`` steps and at
the end (when ``save`` is given), shows a progress bar, calls the hooks after each step, and guards
against non-finite steps: a non-finite loss or gradient is skipped (no update); non-finite parameters
are restored from the last good state; ``max_bad`` failures in a row stop the run with a one-line
error while the last checkpoint stays on disk. Ctrl-C / SIGTERM finish the current step, write a
checkpoint and raise ``Interrupted``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from reconstruct.method import Method, NonFiniteError, StepOutput
from scenes.errors import ReconError
from scenes.progress import progress


@dataclass
class LoopState:
    """What the loop carries from step to step (and what a checkpoint restores)."""

    step: int = 0
    """Steps done."""
    seconds: float = 0.0
    """Wall time spent in steps (not in hooks or checkpoints)."""
    history: list[dict] = field(default_factory=list)
    """Rows {step, loss, psnr, n, terms...} every ``log_every`` steps, plus records such as the init."""
    failed_steps: list[int] = field(default_factory=list)
    """Steps whose update was skipped by the NaN guard."""


class Hook(Protocol):
    """Sees every step; never changes the method (the UI does not reach into the loop)."""

    def on_step(self, method: Method, state: LoopState, out: StepOutput) -> None: ...

    def on_end(self, method: Method, state: LoopState) -> None: ...


class Interrupted(Exception):
    """Training stopped by Ctrl-C / SIGTERM after the current step; a checkpoint was written at
    ``step`` when the loop had somewhere to save it."""

    def __init__(self, step: int, saved: bool, signum: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.saved, self.signum = step, saved, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _StopRequests:
    """SIGINT / SIGTERM set a flag the loop reads between steps (main thread only; the previous
    handlers come back when the loop ends)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> "_StopRequests":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


Saver = Callable[[dict], None]
"""Writes a checkpoint payload {step, seconds, history, rng, state}."""


def checkpoint_payload(method: Method, state: LoopState, method_state: dict | None = None) -> dict:
    """What a checkpoint holds; ``method_state``: ``method.state_dict()`` when the caller has it already."""
    from reconstruct.run import rng_state

    return {"step": state.step, "seconds": state.seconds, "history": list(state.history),
            "failed_steps": list(state.failed_steps), "rng": rng_state(),
            "state": method.state_dict() if method_state is None else method_state}


def restore_state(method: Method, payload: dict) -> LoopState:
    """Load a checkpoint payload into ``method``; returns the loop state it continues from."""
    from reconstruct.run import set_rng_state

    method.load_state_dict(payload["state"])
    set_rng_state(payload["rng"])
    return LoopState(step=int(payload["step"]), seconds=float(payload["seconds"]), history=list(payload["history"]),
                     failed_steps=[int(s) for s in payload.get("failed_steps", [])])


def train_loop(method: Method, state: LoopState, *, until: int, label: str = "train", log_every: int = 50,
               checkpoint_every: int | None = None, save: Saver | None = None, hooks: tuple | list = (),
               show_progress: bool = True, max_bad: int = 5) -> LoopState:
    """Train ``method`` from ``state.step`` to ``until`` steps; returns the final state."""
    assert until >= state.step, (until, state.step)
    last_good = method.state_dict()
    bad = 0
    with _StopRequests() as stop, progress(label, until, completed=state.step, enabled=show_progress) as bar:
        t_rate, s_rate = time.perf_counter(), state.step
        while state.step < until:
            t0 = time.perf_counter()
            try:
                out = method.train_step(state.step)
            except NonFiniteError as err:
                state.failed_steps.append(state.step)
                bad += 1
                method.discard_step()
                if bad >= max_bad:
                    where = "; the last good checkpoint is kept" if save is not None else ""
                    raise ReconError(None, f"training diverged: {err} ({max_bad} failed steps in a row){where}") from None
                if err.params_corrupted:
                    method.load_state_dict(last_good)
                state.step += 1
                continue
            bad = 0
            state.seconds += time.perf_counter() - t0
            state.step += 1
            if (state.step - 1) % log_every == 0 or state.step == until or out.events:
                state.history.append({"step": state.step - 1, "loss": out.loss, "psnr": out.psnr, "n": out.count,
                                      **out.terms, **out.events})
            if checkpoint_every and state.step % checkpoint_every == 0 and state.step < until:
                last_good = method.state_dict()
                if save is not None:
                    save(checkpoint_payload(method, state, last_good))
            for hook in hooks:
                hook.on_step(method, state, out)
            if state.step % 10 == 0 or state.step == until:
                rate = (state.step - s_rate) / max(time.perf_counter() - t_rate, 1e-9)
                bar.update(state.step, f"{method.stats_text(out)}  {rate:.1f} steps/s")
            if stop.signum is not None and state.step < until:
                if save is not None:
                    save(checkpoint_payload(method, state))
                raise Interrupted(state.step, save is not None, stop.signum)
    if save is not None:
        save(checkpoint_payload(method, state))
    for hook in hooks:
        hook.on_end(method, state)
    return state
