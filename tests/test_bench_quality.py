"""`recon bench quality --protocol paper`: protocols from the folder layout, resumable runs, the table."""

from __future__ import annotations

import json

import numpy as np

from recon.bench.quality import means, scene_protocol, to_markdown, train_or_resume
from recon.cli import main
from reconstruct.demo import write_demo_scene
from reconstruct.run import Run

FAST = ["--views", "4", "--init.kind", "random", "--init.n-random", "300", "--optim.sh-degree", "0",
        "--preset", "vanilla", "--output.checkpoint-every", "4"]


def test_protocol_from_layout(tmp_path):
    blender = write_demo_scene(tmp_path / "blender", n_train=4, n_test=2, size=16)
    assert scene_protocol(blender).name == "blender-8"
    llff = tmp_path / "llff"
    llff.mkdir()
    np.save(llff / "poses_bounds.npy", np.zeros((4, 17)))
    assert scene_protocol(llff).args == ("--views", "3", "--downscale", "8")
    dtu = tmp_path / "dtu"
    dtu.mkdir()
    np.savez(dtu / "cameras_sphere.npz")
    assert scene_protocol(dtu).name == "dtu-3"
    assert scene_protocol(tmp_path) is None


def test_finished_run_is_reused_and_interrupted_run_resumes(tmp_path):
    scene = write_demo_scene(tmp_path / "scene", n_train=5, n_test=2, size=24)
    run_dir = tmp_path / "run"
    args = [str(scene), *FAST, "--iters", "8"]
    first = train_or_resume(run_dir, args, 8)
    assert first["iters"] == 8
    stamp = Run(run_dir).metrics_path().stat().st_mtime_ns
    assert train_or_resume(run_dir, args, 8) == first
    assert Run(run_dir).metrics_path().stat().st_mtime_ns == stamp  # reused, not retrained

    # an interrupted run: a checkpoint at step 4 and no metrics yet
    partial = tmp_path / "partial"
    assert main(["train", *args[:-1], "4", "--out", str(partial)]) == 0
    Run(partial).metrics_path().unlink()
    cfg = json.loads(Run(partial).config_path.read_text())
    cfg["iters"] = 8
    Run(partial).config_path.write_text(json.dumps(cfg))
    resumed = train_or_resume(partial, args, 8)
    assert resumed["iters"] == 8
    history = json.loads(Run(partial).history_path.read_text())
    assert max(h["step"] for h in history) >= 4


def test_table_means_and_published_rows():
    rows = [{"protocol": "llff-3", "scene": s, "preset": p, "iters": 10, "note": "images_8", "psnr": v,
             "ssim": 0.5, "lpips": None, "lpips_reason": "no weights", "n_gaussians": 10, "n_start": 5,
             "train_seconds": 1.0, "warnings": [], "device": "CPU"}
            for s, p, v in [("fern", "vanilla", 18.0), ("flower", "vanilla", 20.0), ("fern", "sparse", 19.0)]]
    m = {(r["protocol"], r["preset"]): r["psnr"] for r in means(rows)}
    assert m == {("llff-3", "vanilla"): 19.0, ("llff-3", "sparse"): 19.0}
    text = to_markdown(rows)
    assert "DropGaussian (published) | the papers' set | 20.76" in text
    assert "recon vanilla (mean) | fern, flower | 19.00" in text


def test_no_train_tabulates_only_finished_runs(tmp_path, capsys):
    from recon.bench import QualityBench
    from recon.bench.quality import run_bench

    data = tmp_path / "data"
    write_demo_scene(data / "blender_demo", n_train=4, n_test=2, size=16)
    out = tmp_path / "bench"
    assert run_bench(QualityBench(protocol="paper", data=data, train=False, out=out)) == 0
    report = json.loads((out / "quality-paper.json").read_text())
    assert report["rows"] == [] and report["not_finished"] == ["blender_demo vanilla", "blender_demo sparse"]
    assert not (out / "paper").exists()  # nothing trained
    assert "not finished yet: blender_demo sparse" in capsys.readouterr().out


def test_unknown_scene_name_is_one_error_before_any_work(tmp_path):
    import pytest

    from recon.bench import QualityBench
    from recon.bench.quality import run_bench
    from scenes.errors import ReconError

    data = tmp_path / "data"
    write_demo_scene(data / "blender_demo", n_train=4, n_test=2, size=16)
    with pytest.raises(ReconError, match="no such scene folder"):
        run_bench(QualityBench(protocol="paper", data=data, scenes=("blender_dmeo",), out=tmp_path / "bench"))
    assert not (tmp_path / "bench").exists()


def test_record_keeps_finished_runs_for_another_machine(tmp_path):
    from recon.bench.quality import finished_metrics, restore_record, save_record

    scene = write_demo_scene(tmp_path / "scene", n_train=5, n_test=2, size=24)
    run_dir, record = tmp_path / "out" / "run", tmp_path / "record" / "run"
    first = train_or_resume(run_dir, [str(scene), *FAST, "--iters", "8"], 8)
    assert not restore_record(record, run_dir, 8)  # nothing recorded yet
    save_record(run_dir, record, "CPU test")
    assert sorted(p.name for p in record.iterdir()) == ["config.json", "history.json", "metrics.json", "trained.json"]
    assert json.loads((record / "trained.json").read_text())["device"] == "CPU test"

    fresh = tmp_path / "elsewhere" / "run"  # another machine: the record only
    assert restore_record(record, fresh, 8)
    assert finished_metrics(fresh, 8) == first
    assert not (fresh / "checkpoint.pt").exists() and not restore_record(record, fresh, 8)
    assert not restore_record(record, tmp_path / "other", 9)  # a record of another schedule is not taken


def test_ablation_presets_switch_one_thing_and_bad_names_are_refused(tmp_path, capsys):
    import pytest

    from recon.bench.quality import preset_args
    from scenes.errors import ReconError

    assert preset_args("sparse") == ["--preset", "sparse"]
    assert preset_args("sparse-dropout+binocular-prune_near") == [
        "--preset", "sparse", "--priors.dropout.enabled", "False", "--priors.binocular.enabled", "True",
        "--densify.prune-near", "False"]
    assert preset_args("sparse+dense_init")[2:] == ["--init.kind", "dense"]
    assert preset_args("sparse-dense_init")[2:] == ["--init.kind", "sfm"]
    assert preset_args("sparse-regrow")[2:] == ["--densify.regrow-at-budget", "False"]
    for bad, needle in (("dense", "expected vanilla or sparse"), ("sparse-dropuot", "no switch 'dropuot'"),
                        ("sparse+", "expected vanilla or sparse")):
        with pytest.raises(ReconError, match=needle):
            preset_args(bad)
    data = tmp_path / "data"
    write_demo_scene(data / "blender_demo", n_train=8, n_test=2, size=16)
    assert main(["bench", "quality", "--protocol", "paper", "--data", str(data), "--out", str(tmp_path / "never"),
                 "--presets", "sparse-dropuot"]) == 1
    assert "no switch 'dropuot'" in capsys.readouterr().err and not (tmp_path / "never").exists()

    out = tmp_path / "bench"
    assert main(["bench", "quality", "--protocol", "paper", "--data", str(data), "--out", str(out), "--iters", "3",
                 "--eval-every", "3", "--presets", "sparse-dropout+needles"]) == 0
    cfg = json.loads(Run(out / "paper" / "blender_demo-sparse-dropout+needles").config_path.read_text())
    assert cfg["preset"] == "sparse" and not cfg["priors"]["dropout"]["enabled"] and cfg["priors"]["needles"]["enabled"]
    assert cfg["priors"]["sfm_depth"]["enabled"]  # the rest of the preset stays
    report = json.loads((out / "quality-paper.json").read_text())
    assert [r["preset"] for r in report["rows"]] == ["sparse-dropout+needles"]
