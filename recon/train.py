"""`recon train`: one tyro pass over the chosen method's config, then config resolution, the run
folder, the one loop, and the run's outputs.

    recon train SCENE --views 3                 # splats (the default method)
    recon train nerf SCENE --views 3            # or --method nerf
    recon train --resume RUN                    # continue a run from its checkpoint
    recon train --config RUN/config.json        # the same config again (options given here win)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from reconstruct.config import (CONTROL_FIELDS, METHODS, SplatTrainConfig, TrainConfig, changed_fields, flag_of, get_field,
                                set_field)
from scenes.errors import ReconError

RESUME_MAY_CHANGE = ("iters", "device", "output.checkpoint_every", "output.log_every", "output.eval_at_end", "output.eval_every",
                     "viewer", "viewer_host", "viewer_port")
"""Options ``--resume`` accepts with a new value (everything else must match the run)."""


@dataclass(frozen=True)
class TrainRequest:
    cfg: TrainConfig
    """The resolved config (what config.json records)."""
    resume: Path | None
    overwrite: bool


def _method_from_args(args: list[str]) -> tuple[str, list[str], bool]:
    """(method, remaining args, explicit) from a leading ``splat``/``nerf`` token or ``--method``."""
    rest = list(args)
    method, explicit = None, False
    if rest and rest[0] in METHODS:
        method, explicit = rest.pop(0), True
    for k, a in enumerate(list(rest)):
        if a == "--method" or a.startswith("--method="):
            value = a.split("=", 1)[1] if "=" in a else (rest[k + 1] if k + 1 < len(rest) else "")
            del rest[k: k + (1 if "=" in a else 2)]
            if value not in METHODS:
                raise ReconError(None, f"--method {value!r}: choose one of {', '.join(METHODS)}")
            if method is not None and value != method:
                raise ReconError(None, f"--method {value} contradicts `recon train {method}`")
            method, explicit = value, True
            break
    if method is None:
        for flag in ("--resume", "--config"):
            if flag in rest and rest.index(flag) + 1 < len(rest):
                from reconstruct.run import read_config_file

                method = read_config_file(Path(rest[rest.index(flag) + 1])).method
                break
    return method or "splat", rest, explicit


def _check_flags(method: str, args: list[str]) -> None:
    """Refuse, in one line, an option that only the other method reads."""
    from recon.options import flag_names, given_flags

    own = flag_names(METHODS[method]) | {"--help"}
    for other, cls in METHODS.items():
        if other == method:
            continue
        theirs = flag_names(cls)
        for flag in given_flags(args):
            if flag not in own and flag in theirs:
                raise ReconError(None, f"{flag} is a {other} option; `recon train {method}` does not read it "
                                       f"(pick the method with `recon train {other} ...` or --method {other})")


def parse_train(args: list[str]) -> TrainRequest:
    """The command line of `recon train` as a resolved config (one-line errors, before any work)."""
    import tyro

    from recon.options import parse_or_exit

    method, rest, _ = _method_from_args(args)
    _check_flags(method, rest)
    cls = METHODS[method]
    other = [m for m in METHODS if m != method][0]
    cfg: TrainConfig = parse_or_exit(lambda: tyro.cli(cls, args=rest, prog=f"recon train {method}", description=(
        f"{cls.__doc__} Methods: `recon train splat` (default) or `recon train nerf` (also --method); "
        f"`recon train {other} --help` lists the {other} options.")))
    return resolve_request(cfg)


def resolve_request(cfg: TrainConfig) -> TrainRequest:
    """Apply --resume / --config, resolve preset- and device-dependent defaults, validate."""
    from reconstruct.config import resolve, validate
    from reconstruct.run import Run, read_config_file, resolve_device

    given = {k: v for k, (v, _) in changed_fields(cfg, type(cfg)()).items() if k not in CONTROL_FIELDS}
    if cfg.resume is not None:
        base = Run.open(cfg.resume).config
        if base.method != cfg.method:
            raise ReconError(cfg.resume, f"is a {base.method} run; resume it with `recon train --resume {cfg.resume}`")
        for key, value in given.items():
            old = get_field(base, key)
            if key == "scene" and value is not None and Path(value).resolve() == Path(old).resolve():
                continue
            if key not in RESUME_MAY_CHANGE and value != old:
                raise ReconError(cfg.resume, f"{flag_of(key)} {value} contradicts the run being resumed "
                                             f"(it has {old}); only {', '.join(flag_of(k) for k in RESUME_MAY_CHANGE)} may change")
            base = set_field(base, key, value)
    elif cfg.config is not None:
        base = read_config_file(cfg.config)
        if base.method != cfg.method:
            raise ReconError(cfg.config, f"is a {base.method} config; use `recon train {base.method} --config ...`")
        for key, value in given.items():
            base = set_field(base, key, value)
    else:
        base = cfg
    if base.scene is None:
        raise ReconError(None, "recon train needs a scene folder (recon train SCENE --views N), or --resume RUN")
    try:
        validate(base)
    except ValueError as err:
        raise ReconError(None, str(err)) from None
    if isinstance(base, SplatTrainConfig) and base.viewer:
        from recon.options import check_host

        check_host(base.viewer_host, "--viewer-host")
    device = resolve_device(base.device)
    from reconstruct.poses import count_photos, is_photo_folder

    n_photos = count_photos(base.scene) if is_photo_folder(base.scene) else None
    resolved = resolve(base, device_type=device.type, n_photos=n_photos)
    if resolved.poses in ("dataset", "refine") and n_photos is not None:
        raise ReconError(base.scene, f"holds photos without camera poses; --poses {resolved.poses} needs a posed "
                                     "dataset (leave --poses out, or --poses estimate)")
    return TrainRequest(cfg=resolved, resume=cfg.resume, overwrite=cfg.overwrite)


def default_run_dir(cfg: TrainConfig) -> Path:
    from reconstruct.poses import is_photo_folder

    views = "all" if cfg.views is None else f"{cfg.views}v"
    poses = f"-{cfg.poses}" if cfg.poses in ("estimate", "refine") and not is_photo_folder(cfg.scene) else ""
    return Path("outputs") / f"{Path(str(cfg.scene)).name}-{cfg.method}-{views}{poses}"


def train(req: TrainRequest) -> int:
    """Train (or resume) a run; print the test-view table."""
    from reconstruct.poses import estimated, training_scene
    from reconstruct.run import Run, resolve_device
    from scenes.load import check_images_decode

    cfg = req.cfg
    assert cfg.scene is not None, "a resolved config names its scene"
    device = resolve_device(cfg.device)
    scene = None
    if not estimated(cfg):  # a posed scene is read and checked before any run folder exists
        scene = training_scene(cfg, workdir=Path(cfg.output.out or default_run_dir(cfg)))  # no SfM: writes nothing
        check_images_decode(scene, [*scene.train_ids, *scene.test_ids])
    if req.resume is not None:
        run = Run.open(req.resume)
    else:
        run = Run.create(cfg.output.out or default_run_dir(cfg), overwrite=req.overwrite)
    with run.lock("train"):
        return _train_locked(run, req, scene, device)


def _train_locked(run, req: TrainRequest, scene, device) -> int:
    """The run under its lock. ``scene`` is None for estimated poses: SfM runs (or its poses.json is
    reused) into the run folder here, and a refusal removes what this command created."""
    import numpy as np
    import torch

    from recon.report import print_metrics
    from reconstruct.loop import Interrupted, LoopState, checkpoint_payload, restore_state, train_loop
    from reconstruct.poses import training_scene
    from reconstruct.training import build_method, finish
    from scenes.load import check_images_decode

    cfg = req.cfg
    if req.resume is not None:
        run.sweep()
        if scene is None:
            scene = training_scene(cfg, workdir=run.root)  # the run's poses.json is reused
        payload = run.checkpoint()
        if cfg != run.config:
            run.save_config(cfg)
    else:
        if scene is None:
            try:  # pose estimation can refuse the photos: then nothing half-written stays behind
                scene = training_scene(cfg, workdir=run.root)
                check_images_decode(scene, [*scene.train_ids, *scene.test_ids])
            except BaseException:
                run.discard()
                raise
        run.save_config(cfg)
        payload = None
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    method = build_method(cfg, scene, device, cache_dir=run.priors_dir,
                          resume_state=None if payload is None else payload["state"])
    if cfg.method == "splat" and cfg.masks:  # type: ignore[union-attr]
        from pruning.masks import attach_masks

        attach_masks(method, final_step=cfg.iters - 1)
    if payload is not None:
        try:
            state = restore_state(method, payload)
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as err:
            raise ReconError(run.checkpoint_path, f"checkpoint does not match the run ({type(err).__name__}: "
                                                  f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    else:
        record = getattr(method, "init_record", None)
        state = LoopState(history=[{"step": 0, **record}] if record else [])
        run.save_checkpoint(checkpoint_payload(method, state))
    hooks: list = []
    if cfg.output.eval_every > 0 and scene.test_ids:
        from reconstruct.training import TestCurveHook

        hooks.append(TestCurveHook(every=cfg.output.eval_every))
    if cfg.method == "splat" and cfg.viewer:  # type: ignore[union-attr]
        from viewer.live import LiveViewerHook

        hooks.append(LiveViewerHook(method, host=cfg.viewer_host, port=cfg.viewer_port, start_step=state.step))  # type: ignore[union-attr]
    try:
        state = train_loop(method, state, until=cfg.iters, label=method.name, log_every=cfg.output.log_every,
                           checkpoint_every=cfg.output.checkpoint_every, save=run.save_checkpoint, hooks=hooks)
    except Interrupted as err:
        err.run_dir = run.root  # type: ignore[attr-defined]
        raise
    result = finish(run, method, state, evaluate=cfg.output.eval_at_end)
    if result is not None:
        what = result.get("scored_on", "test views")
        print_metrics(result, title=f"{run.root}: {what} ({method.name})", file=sys.stdout)
    return 0

