"""`recon export`: file conversion, artifact and run sources, the PSNR report, CLI errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pruning.export import export_splats
from pruning.formats import read_splats, write_splats
from pruning.formats._testing import tiny_splats
from recon.cli import main
from reconstruct.splats import Splats

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt,ext", [("ply", ".ply"), ("compressed-ply", ".compressed.ply"),
                                     ("spz", ".spz"), ("splat", ".splat")])
def test_export_converts_a_splat_file(tmp_path, fmt, ext) -> None:
    s = tiny_splats(300, sh_degree=2)
    src = write_splats(tmp_path / "in.spz", s, format="spz")
    report = export_splats(src, format=fmt, out=tmp_path / f"out{ext}", progress=False)
    out = Path(report.out)
    assert out.is_file() and report.bytes == out.stat().st_size
    assert report.n_splats == 300 and report.bytes_per_splat == pytest.approx(report.bytes / 300)
    assert report.sh_degree == (0 if fmt == "splat" else 2)
    assert report.psnr_vs_trained is None and "plain splat file" in report.psnr_note
    assert len(read_splats(out)) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.spz", f"out{ext}"])  # no temp files


def test_export_default_out_and_sh_degree(tmp_path) -> None:
    src = write_splats(tmp_path / "scene.ply", tiny_splats(50, sh_degree=3), format="ply")
    report = export_splats(src, format="compressed-ply", sh_degree=1, progress=False)
    assert Path(report.out) == tmp_path / "scene.compressed.ply"
    assert read_splats(report.out).sh_degree == 1
    with pytest.raises(Exception, match="overwrite the input"):
        export_splats(src, format="ply", progress=False)


def test_export_from_compressed_artifact(tmp_path) -> None:
    from pruning.artifact import CompactSplats, save_artifact

    s = tiny_splats(120, sh_degree=1)
    save_artifact(tmp_path / "compressed", CompactSplats.from_splats(s))
    report = export_splats(tmp_path / "compressed", format="spz", progress=False)
    assert report.source_kind == "compressed"
    assert Path(report.out) == tmp_path / "export" / "splats.spz"
    back = read_splats(report.out)
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(back.means).query(s.means)
    assert dist.max() < 2e-3  # fp16 artifact, then 12 fractional bits


def _tiny_run(tmp_path: Path) -> Path:
    """A run folder on the bundled demo scene: its config.json and a splats.ply of 400 splats
    placed around the scene origin (not trained: the export only needs something to render)."""
    from reconstruct.config import SplatTrainConfig, resolve
    from reconstruct.run import Run

    demo = ROOT / "data" / "demo"
    run = tmp_path / "run"
    Run.create(run, overwrite=False).save_config(resolve(SplatTrainConfig(scene=demo, views=4), device_type="cpu"))
    rng = np.random.default_rng(0)
    n = 400
    s = Splats(
        means=rng.uniform(-0.6, 0.6, (n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        log_scales=rng.uniform(-3.5, -2.0, (n, 3)).astype(np.float32),
        opacity_logits=rng.uniform(-1, 3, n).astype(np.float32),
        sh0=rng.uniform(-1.5, 1.5, (n, 3)).astype(np.float32),
        shN=rng.uniform(-0.2, 0.2, (n, 8, 3)).astype(np.float32),
    )
    write_splats(run / "splats.ply", s, format="ply")
    return run


def test_export_run_reports_psnr_against_trained_renders(tmp_path) -> None:
    run = _tiny_run(tmp_path)
    compressed = export_splats(run, format="compressed-ply", max_views=2, progress=False)
    assert compressed.source_kind == "trained"
    assert Path(compressed.out) == run / "export" / "splats.compressed.ply"
    assert compressed.n_views == 2 and len(compressed.per_view) == 2
    # 8-bit colors and 11-bit positions: a close but not identical render
    assert 30.0 < compressed.psnr_vs_trained < 100.0, compressed.psnr_vs_trained
    assert abs(compressed.psnr_export_gt - compressed.psnr_trained_gt) < 0.3
    lossless = export_splats(run, format="ply", max_views=1, progress=False)
    assert lossless.psnr_vs_trained == 100.0  # identical renders, capped
    splat = export_splats(run, format="splat", max_views=2, progress=False)
    assert splat.psnr_vs_trained < compressed.psnr_vs_trained  # .splat drops the SH bands


def test_cli_export_json(tmp_path, capsys) -> None:
    src = write_splats(tmp_path / "a.ply", tiny_splats(30, sh_degree=0), format="ply")
    code = main(["export", str(src), "--format", "splat", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "splat" and report["bytes"] == 30 * 32


@pytest.mark.parametrize("command", ["export", "view"])
@pytest.mark.parametrize("payload,name", [
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999999\nproperty float x\nend_header\n",
     "absurd.ply"),
    (b"\x00" * 31, "short.splat"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 10, "broken.spz"),
])
def test_cli_rejects_bad_files_with_one_line(tmp_path, capsys, command, payload, name) -> None:
    path = tmp_path / name
    path.write_bytes(payload)
    code = main([command, str(path)])
    err = capsys.readouterr().err.strip()
    if command == "view" and code == 2 and "not built" in err:
        pytest.skip("`recon view` not built in this checkout")
    assert code == 1, err
    assert len(err.splitlines()) == 1 and str(path) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing half-written


def test_cli_missing_input(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_export_turns_the_run_upright_for_players(tmp_path) -> None:
    # The demo scene is Blender-style, +z up: every player file gets that up as the .ply frame's
    # -y (and .glb / .spz, which the writers turn half a turn about x, as their +y).
    run = _tiny_run(tmp_path)
    world = read_splats(run / "splats.ply")
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # +z -> -y, x kept
    for fmt in ("ply", "glb", "spz"):
        report = export_splats(run, format=fmt, max_views=2, progress=False)
        assert report.up_world == [0.0, 0.0, 1.0] and report.turn_deg == pytest.approx(90.0)
        assert report.up.startswith("cameras: up (+0.000, +0.000, +1.000) (a dataset axis")
        back = read_splats(report.out)
        assert np.allclose(back.means, world.means @ R.T, atol=2e-3 if fmt == "spz" else 1e-5)
        # the PSNR renders the file as it is from the test cameras turned the same way
        assert report.psnr_vs_trained > (100.0 - 1e-9 if fmt in ("ply", "glb") else 30.0), (fmt, report.psnr_vs_trained)
    turned = export_splats(run, format="ply", max_views=1, progress=False, up="+x")
    assert turned.up == "--up +x" and np.allclose(read_splats(turned.out).means[:, 1], -world.means[:, 0], atol=1e-6)
    assert turned.psnr_vs_trained == 100.0
    # a bare splat file has no cameras: auto keeps its axes; a named axis still turns it
    src = write_splats(tmp_path / "bare.ply", world, format="ply")
    kept = export_splats(src, format="ply", out=tmp_path / "kept.ply", progress=False)
    assert kept.up_world is None and kept.turn_deg == 0.0 and np.array_equal(read_splats(kept.out).means, world.means)
    named = export_splats(src, format="ply", out=tmp_path / "named.ply", progress=False, up="+z")
    assert np.allclose(read_splats(named.out).means, world.means @ R.T, atol=1e-6)
    with pytest.raises(Exception, match="--up"):
        export_splats(src, format="ply", out=tmp_path / "bad.ply", progress=False, up="z")


def test_export_sog_of_a_compressed_run_is_the_fine_tuned_file(tmp_path) -> None:
    from pruning.compress import CompressConfig, compress_splats
    from pruning.sog_quantize import SogQuantizeConfig
    from reconstruct.run import Run

    run = _tiny_run(tmp_path)
    cfg = CompressConfig(masks=False, quantize=True, quantize_steps=4, progress=False, device="cpu",
                         sog=SogQuantizeConfig(palette=32))
    r = Run(run)
    report = compress_splats(r.splats(), r.scene(), r.compressed_dir, cfg)
    assert report["up_world"] == [0.0, 0.0, 1.0]  # fine-tuned in the upright file frame
    trained = (run / "compressed" / "scene.sog").read_bytes()
    exported = export_splats(run, format="sog", progress=False)
    assert exported.source_kind == "compressed" and Path(exported.out).read_bytes() == trained
    # the file, read back and rendered from the turned cameras, scores as the artifact does
    assert exported.n_views == report["n_test"]
    assert abs(exported.psnr_export_gt - report["psnr_after"]) < 0.05, (exported.psnr_export_gt, report["psnr_after"])
    # the compressed .ply is upright too: the world's +z is its -y
    from pruning.artifact import load_artifact

    world = load_artifact(run / "compressed")
    upright = read_splats(run / "compressed" / "splats.compressed.ply")
    assert np.allclose(np.sort(upright.means[:, 1]), np.sort(-world.means[:, 2]), atol=0.01)
