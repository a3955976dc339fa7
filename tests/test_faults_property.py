"""Property: random nonsense on the command line and random damage to a run folder never give a
traceback. Every such invocation exits non-zero with at most 3 lines on stderr and leaves the run
folder as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recon.cli import main
from reconstruct.demo import write_demo_scene

FAST = ["--views", "4", "--init.kind", "random", "--init.n-random", "300", "--optim.sh-degree", "0", "--preset", "vanilla"]

BAD_TRAIN = {
    "--iters": ["-1", "-5", "abc", "1.5", "", "nan"],
    "--views": ["0", "-3", "x", "2.5"],
    "--downscale": ["0", "0.0001", "-2", "nan", "inf", "abc"],
    "--resolution": ["0", "-1", "3", "99999999", "x"],
    "--output.checkpoint-every": ["0", "-1", "q"],
    "--output.log-every": ["0", "-7"],
    "--optim.sh-degree": ["9", "-1", "4"],
    "--optim.sh-degree-interval": ["0", "-2"],
    "--priors.dropout.rate": ["1.0", "-0.1", "2", "nan"],
    "--init.n-random": ["0", "-10"],
    "--densify.refine-every": ["0"],
    "--loss.ssim-lambda": ["1.5", "-1", "nan"],
    "--device": ["tpu", "cuda:7", "gpu"],
    "--preset": ["fast", ""],
    "--init.kind": ["voxels", "ply"],
    "--viewer-port": ["70000", "-1"],
    "--method": ["voxels"],
    "--nonsense": ["1"],
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return write_demo_scene(tmp_path_factory.mktemp("scene"), n_train=6, n_test=2, size=24)


@pytest.fixture(scope="module")
def run(scene, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", str(scene), *FAST, "--iters", "5", "--out", str(out)]) == 0
    assert main(["compress", str(out), "--mask-steps", "2", "--quantize-steps", "2", "--json"]) == 0
    return out


def _check(capsys, code: int, folder: Path | None = None, before: dict | None = None) -> None:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code != 0, err
    assert len(err) <= 3, err
    assert not any("Traceback" in ln for ln in err), err
    if folder is not None:
        assert _snapshot(folder) == before


def _snapshot(folder: Path) -> dict[str, int]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(BAD_TRAIN)), min_size=1, max_size=3, unique=True), st.data())
def test_train_refuses_random_bad_options(scene, tmp_path, capsys, flags, data):
    args = []
    for flag in flags:
        args += [flag, data.draw(st.sampled_from(BAD_TRAIN[flag]))]
    out = tmp_path / "never"
    _check(capsys, main(["train", str(scene), *FAST, "--iters", "2", *args, "--out", str(out)]))
    assert not out.exists()


def _damage(run: Path, kind: str, rng_bytes: bytes) -> None:
    if kind == "no_config":
        (run / "config.json").unlink()
    elif kind == "garbage_config":
        (run / "config.json").write_bytes(rng_bytes)
    elif kind == "config_not_object":
        (run / "config.json").write_text("[1, 2, 3]")
    elif kind == "config_bad_type":
        text = (run / "config.json").read_text().replace('"iters": 5', '"iters": "five"')
        (run / "config.json").write_text(text)
    elif kind == "garbage_splats":
        (run / "splats.ply").write_bytes(rng_bytes)
    elif kind == "truncated_splats":
        data = (run / "splats.ply").read_bytes()
        (run / "splats.ply").write_bytes(data[: len(data) // 3])
    elif kind == "garbage_checkpoint":
        (run / "checkpoint.pt").write_bytes(rng_bytes)
    elif kind == "garbage_artifact":
        (run / "compressed" / "artifact.json").write_bytes(rng_bytes)
    elif kind == "scene_gone":
        text = (run / "config.json").read_text()
        import json

        cfg = json.loads(text)
        cfg["scene"] = str(run / "nowhere")
        (run / "config.json").write_text(json.dumps(cfg))


# (command line, damage kinds it must refuse)
CASES = [
    (["eval", "{run}"], ["no_config", "garbage_config", "config_not_object", "config_bad_type", "garbage_splats",
                         "truncated_splats", "scene_gone"]),
    (["eval", "{run}", "--compressed"], ["garbage_artifact", "garbage_config", "scene_gone"]),
    (["view", "{run}", "--port", "0"], ["garbage_config", "config_not_object", "garbage_splats", "truncated_splats"]),
    (["export", "{run}", "--format", "spz", "--source", "trained"], ["garbage_config", "garbage_splats",
                                                                     "truncated_splats", "config_bad_type"]),
    (["export", "{run}", "--format", "ply", "--source", "compressed"], ["garbage_artifact"]),
    (["compress", "{run}", "--mask-steps", "2", "--quantize-steps", "2"], ["no_config", "garbage_config",
                                                                          "garbage_splats", "scene_gone"]),
    (["train", "--resume", "{run}"], ["no_config", "garbage_config", "config_bad_type", "garbage_checkpoint",
                                      "scene_gone"]),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(range(len(CASES))), st.data(), st.binary(min_size=0, max_size=200))
def test_every_command_refuses_a_damaged_run_folder(run, tmp_path_factory, capsys, case, data, junk):
    argv, kinds = CASES[case]
    kind = data.draw(st.sampled_from(kinds))
    copy = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(run, copy)
    _damage(copy, kind, junk)
    before = _snapshot(copy)
    capsys.readouterr()
    _check(capsys, main([a.replace("{run}", str(copy)) for a in argv]), copy, before)
