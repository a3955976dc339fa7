"""`recon export`: write a run (or its compressed artifact, or any splat file) for players.

    report = export_splats(Path("outputs/lego"), format="compressed-ply")
    print_report(report)

Sources, in order of preference for a run folder with ``source="auto"``:
RUN/compressed/ (the `recon compress` artifact, decoded by pruning.artifact.load_artifact), then
RUN/splats.ply (the trained scene). A plain splat file converts between formats.

What the report measures (the quality a player will show): the exported file is read back with our
own reader and rendered on the run's test views; its PSNR is taken against renders of the trained
splats (RUN/splats.ply) and, next to it, both against the ground-truth photos.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reconstruct.run import Run
from reconstruct.splats import Splats
from scenes.errors import ReconError
from scenes.fileio import atomic_write_bytes
from scenes.progress import progress as progress_bar

from .formats import EXTENSIONS, FORMATS, Format, read_splats
from .orient import Orientation, encode_player_file, player_orientation, scene_in_player_frame


@dataclass
class ExportReport:
    """What `recon export` wrote and how it renders."""

    source: str
    """Where the splats came from (file or folder)."""
    source_kind: str
    """"trained" (RUN/splats.ply), "compressed" (artifact) or "file"."""
    out: str
    format: str
    n_splats: int
    sh_degree: int
    """SH degree stored in the exported file."""
    bytes: int
    bytes_per_splat: float
    ply_bytes: int
    """Size the same splats take as a standard float .ply (for the ratio)."""
    seconds_write: float
    up: str = "axes kept"
    """How the file was turned upright (``--up``): where its up came from."""
    up_world: list[float] | None = None
    """The source frame's direction that is up in the file (None = axes kept)."""
    turn_deg: float = 0.0
    """Angle the scene was turned by to stand upright, degrees."""
    psnr_vs_trained: float | None = None
    """Mean PSNR (dB) of renders of the exported file vs renders of the trained splats."""
    psnr_trained_gt: float | None = None
    """Mean PSNR of the trained splats vs the test photos."""
    psnr_export_gt: float | None = None
    """Mean PSNR of the exported file vs the test photos."""
    n_views: int = 0
    psnr_note: str | None = None
    """Why no PSNR was measured, when none was."""
    per_view: list[dict] = field(default_factory=list)


def _is_artifact(folder: Path) -> bool:
    from pruning import artifact

    return (folder / artifact.HEADER).is_file()


def resolve_source(target: Path, source: str = "auto") -> tuple[Splats, str, Run | None]:
    """(splats, kind, run or None) for a run folder, artifact folder or splat file."""
    target = Path(target)
    if not target.exists():
        raise ReconError(target, "no such file or folder")
    if target.is_file():
        if source not in ("auto", "file"):
            raise ReconError(target, f"--source {source} needs a run folder, got a file")
        return read_splats(target), "file", None
    if _is_artifact(target) and not Run.is_run(target):
        from pruning.artifact import load_artifact

        parent = Run(target.parent) if Run.is_run(target.parent) else None
        return load_artifact(target), "compressed", parent
    run = Run(target)
    if not Run.is_run(target) and not run.has_splats():
        raise ReconError(target, "not a run folder (no config nor splats) nor a compressed artifact")
    if Run.is_run(target):
        run.config  # noqa: B018 - an unreadable config.json is refused here, before anything is written
    if source == "compressed" or (source == "auto" and _is_artifact(run.compressed_dir)):
        from pruning.artifact import load_artifact

        return load_artifact(run.compressed_dir), "compressed", run
    if source not in ("auto", "trained"):
        raise ReconError(target, f"unknown --source {source} (auto, trained or compressed)")
    return run.splats(), "trained", run


def default_out(target: Path, kind: str, fmt: str) -> Path:
    """RUN/export/splats<ext> for runs; next to the input file otherwise."""
    ext = EXTENSIONS[fmt]
    if kind == "file":
        name = target.name
        for suffix in (".compressed.ply", ".ply", ".spz", ".splat", ".sog", ".glb"):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return target.with_name(name + ext)
    base = target.parent if kind == "compressed" and _is_artifact(target) else target
    return Run(base).export_dir / f"splats{ext}"


def _ply_size(splats: Splats) -> int:
    """Bytes of the same splats as a standard float32 .ply (header + 17 + 3(K-1) floats a splat)."""
    from reconstruct.plyio import header_text
    from reconstruct.ply import vertex_array

    head = header_text([("vertex", vertex_array(splats.subset(np.arange(0))))])
    return len(head) + len(str(len(splats))) - 1 + len(splats) * 4 * (17 + 3 * splats.shN.shape[1])


def measure_psnr(run: Run, exported: Splats, *, max_views: int | None, progress: bool,
                 orientation: Orientation | None = None) -> dict:
    """Render the exported splats and the trained splats on the run's test views and compare.

    ``orientation``: how the file was turned; its splats are rendered as they are, from the test
    cameras turned the same way (so a wrong SH or quaternion rotation shows in the score)."""
    import torch

    from reconstruct.evaluate import render_splats
    from reconstruct.metrics import psnr
    from reconstruct.run import resolve_device

    scene = run.scene()
    file_scene = scene if orientation is None else scene_in_player_frame(scene, orientation)
    trained = run.splats()
    ids = list(scene.test_ids)
    if max_views is not None:
        ids = ids[:max_views]
    if not ids:
        return {"psnr_note": "the run's scene has no test views"}
    device = resolve_device("auto")
    rows = []

    def one(frame: int) -> dict:
        a, _ = render_splats(exported, file_scene, frame, device=device)
        b, _ = render_splats(trained, scene, frame, device=device)
        gt = torch.as_tensor(scene.image(frame))
        return {"frame": frame, "vs_trained": psnr(a, b), "export_gt": psnr(a, gt), "trained_gt": psnr(b, gt)}

    with progress_bar("render", len(ids), enabled=progress, transient=True) as bar:
        for frame in ids:
            rows.append(one(frame))
            bar.advance()

    def mean(key: str) -> float:
        vals = np.array([r[key] for r in rows], np.float64)
        return float(np.mean(np.minimum(vals, 100.0)))  # identical renders give inf; cap at 100 dB

    return {"psnr_vs_trained": mean("vs_trained"), "psnr_trained_gt": mean("trained_gt"),
            "psnr_export_gt": mean("export_gt"), "n_views": len(rows), "per_view": rows}


def _orientation(up: str, run: Run | None, kind: str) -> Orientation:
    """``up`` resolved for this source: auto takes the run's training cameras (a bare file keeps
    its axes; so does a run whose scene folder is gone, said in the report)."""
    if up != "auto" or run is None or kind == "file":
        return player_orientation(up)
    try:
        scene = run.scene()
    except ReconError as err:
        return Orientation(R_file_world=np.eye(3), up_world=None, how=f"axes kept (no cameras: {err})")
    return player_orientation("auto", scene=scene)


def export_splats(target: Path, *, format: Format = "compressed-ply", out: Path | None = None,
                  sh_degree: int | None = None, source: str = "auto", evaluate: bool = True,
                  max_views: int | None = None, progress: bool = True, spz_version: int = 3,
                  up: str = "auto") -> ExportReport:
    """Write ``target`` (run folder, artifact folder or splat file) as ``format``, upright
    (pruning.orient: ``up`` = auto, +x, -x, +y, -y, +z or -z); measure it."""
    if format not in FORMATS:
        raise ReconError(None, f"unknown export format {format!r} (one of {', '.join(FORMATS)})")
    target = Path(target)
    splats, kind, run = resolve_source(target, source)
    if len(splats) == 0:
        raise ReconError(target, "has zero splats; nothing to export")
    out = Path(out) if out is not None else default_out(target, kind, format)
    if out.exists() and target.is_file() and out.resolve() == target.resolve():
        raise ReconError(out, "output would overwrite the input; pass --out")
    if out.is_dir():
        raise ReconError(out, "--out is a folder; give a file name")
    orientation = _orientation(up, run, kind)
    t0 = time.perf_counter()
    from pruning.compress import SOG_FILE

    trained_sog = None if run is None else run.compressed_dir / SOG_FILE
    if (format == "sog" and kind == "compressed" and up == "auto" and sh_degree is None and trained_sog is not None
            and trained_sog.is_file()):
        data = trained_sog.read_bytes()  # the file `recon compress` fine-tuned, not a second quantization
    else:
        data = encode_player_file(splats, format=format, orientation=orientation, sh_degree=sh_degree,
                                  spz_version=spz_version)
    atomic_write_bytes(out, data)
    seconds = time.perf_counter() - t0
    back = read_splats(out)
    report = ExportReport(
        source=str(target), source_kind=kind, out=str(out), format=format, n_splats=len(back),
        sh_degree=back.sh_degree, bytes=len(data), bytes_per_splat=len(data) / len(back),
        ply_bytes=_ply_size(splats), seconds_write=seconds, up=orientation.how,
        up_world=None if orientation.up_world is None else [float(c) for c in orientation.up_world],
        turn_deg=orientation.turn_deg,
    )
    if not evaluate:
        report.psnr_note = "not measured (--no-evaluate)"
    elif run is None:
        report.psnr_note = "input is a plain splat file: no run, so no test views to render"
    elif not run.has_splats():
        report.psnr_note = "run has no trained splats to compare against"
    else:
        try:
            result = measure_psnr(run, back, max_views=max_views, progress=progress, orientation=orientation)
        except ReconError as err:  # the run's scene moved: the file is written, only the comparison is skipped
            result = {"psnr_note": f"not measured: {err}"}
        for key, value in result.items():
            setattr(report, key, value)
    return report
