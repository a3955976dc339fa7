"""`recon info` through the CLI: JSON summary, text summary, and every bad-input case (exit 1, one line)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scene_fixtures import write_blender, write_colmap, write_llff, write_nerfstudio

from recon.cli import main
from scenes import ReconError, load_scene

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
KEYS = {"format", "n_frames", "width", "height", "train", "test", "has_points"}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(capsys, argv: list[str], *needles: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_help_lists_all_seven_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("train", "eval", "view", "compress", "export", "info", "bench"):
        assert name in text, name
    assert "Union" not in text  # every subcommand has its own description, not typing's docstring


def test_info_json_on_each_format(tmp_path, capsys):
    cases = {
        "blender": (write_blender, dict(n_train=5, n_test=3), (8, 8), False),
        "llff": (write_llff, dict(n=10, points=True), (8, 6), True),
        "colmap": (write_colmap, dict(n=10), (16, 12), True),
        "nerfstudio": (write_nerfstudio, dict(n=9), (16, 12), False),
    }
    for fmt, (writer, kw, size, has_points) in cases.items():
        root = tmp_path / fmt
        root.mkdir()
        writer(root, **kw)
        code, out, err = run_cli(capsys, "info", str(root), "--views", "2", "--json")
        assert code == 0, err
        assert len(out.strip().splitlines()) == 1
        info = json.loads(out)
        assert set(info) == KEYS
        scene = load_scene(root, views=2)
        assert info == {
            "format": fmt,
            "n_frames": scene.n_frames,
            "width": size[0],
            "height": size[1],
            "train": list(scene.train_ids),
            "test": list(scene.test_ids),
            "has_points": has_points,
        }
        assert len(info["train"]) == 2


def test_info_text_and_resample_options(tmp_path, capsys):
    write_llff(tmp_path, n=10, full_size=(32, 24), factors=(1, 4))
    code, out, _ = run_cli(capsys, "info", str(tmp_path), "--views", "3", "--downscale", "8")
    assert code == 0
    assert "llff" in out and "4 x 3" in out and "[1, 5, 9]" in out and "[0, 8]" in out
    code, out, _ = run_cli(capsys, "info", str(tmp_path), "--resolution", "16", "--views", "all", "--json")
    info = json.loads(out)
    assert (info["width"], info["height"]) == (16, 12) and len(info["train"]) == 8


# ---------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path, capsys):
    assert_one_line_error(capsys, ["info", str(tmp_path / "nope")], "nope", "does not exist")


def test_unknown_format(tmp_path, capsys):
    (tmp_path / "photo.png").write_bytes(b"x")
    assert_one_line_error(capsys, ["info", str(tmp_path)], str(tmp_path), "unknown scene format")


def test_missing_image(tmp_path, capsys):
    write_blender(tmp_path)
    (tmp_path / "test" / "r_1.png").unlink()
    assert_one_line_error(capsys, ["info", str(tmp_path)], "r_1.png", "missing")


def test_unreadable_image(tmp_path, capsys):
    write_llff(tmp_path, n=4)
    (tmp_path / "images_4" / "IMG_0002.png").write_bytes(b"not a png at all")
    assert_one_line_error(capsys, ["info", str(tmp_path)], "IMG_0002.png", "unreadable image")


def test_image_that_fails_to_decode_raises_at_load_time_of_pixels(tmp_path):
    write_blender(tmp_path, size=32)
    p = tmp_path / "train" / "r_2.png"
    p.write_bytes(p.read_bytes()[:60])  # header intact, pixel data cut
    scene = load_scene(tmp_path)  # headers are fine
    with pytest.raises(ReconError, match="r_2.png: cannot decode image"):
        scene.image(2)


def test_pose_image_count_mismatch(tmp_path, capsys):
    write_llff(tmp_path, n=5)
    (tmp_path / "images_4" / "IMG_0004.png").unlink()
    assert_one_line_error(capsys, ["info", str(tmp_path)], "images_4", "4 images", "5 poses")


def test_image_size_mismatch(tmp_path, capsys):
    write_nerfstudio(tmp_path, n=3)
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "images" / "frame_00001.png")
    assert_one_line_error(capsys, ["info", str(tmp_path)], "frame_00001.png", "7x5")


@pytest.mark.parametrize("fmt", ["blender", "llff", "nerfstudio", "colmap"])
def test_non_finite_pose(tmp_path, capsys, fmt):
    if fmt == "blender":
        write_blender(tmp_path)
        meta = json.loads((tmp_path / "transforms_train.json").read_text())
        meta["frames"][1]["transform_matrix"][0][3] = float("nan")
        (tmp_path / "transforms_train.json").write_text(json.dumps(meta))
        where = "transforms_train.json"
    elif fmt == "llff":
        write_llff(tmp_path, n=4)
        pb = np.load(tmp_path / "poses_bounds.npy")
        pb[2, 3] = np.inf
        np.save(tmp_path / "poses_bounds.npy", pb)
        where = "poses_bounds.npy"
    elif fmt == "nerfstudio":
        write_nerfstudio(tmp_path, n=3)
        meta = json.loads((tmp_path / "transforms.json").read_text())
        meta["frames"][0]["transform_matrix"][1][1] = float("nan")
        (tmp_path / "transforms.json").write_text(json.dumps(meta))
        where = "transforms.json"
    else:  # binary model as pycolmap 4 writes it: poses live in frames.bin
        write_colmap(tmp_path, n=3, binary=True)
        frames = tmp_path / "sparse" / "0" / "frames.bin"
        data = bytearray(frames.read_bytes())
        # uint64 count, then frame: uint32 frame id, uint32 rig id, 4 x f64 quaternion, 3 x f64 translation
        struct.pack_into("<d", data, 8 + 4 + 4 + 32, float("nan"))
        frames.write_bytes(bytes(data))
        where = "frames.bin"
    assert_one_line_error(capsys, ["info", str(tmp_path)], where, "non-finite")


def test_colmap_text_model_that_does_not_parse(tmp_path, capsys):
    write_colmap(tmp_path, n=3)
    txt = tmp_path / "sparse" / "0" / "images.txt"
    lines = txt.read_text().splitlines()
    fields = lines[1].split()
    fields[5] = "nan"  # COLMAP's text parser rejects non-numbers in a pose
    lines[1] = " ".join(fields)
    txt.write_text("\n".join(lines) + "\n")
    line = assert_one_line_error(capsys, ["info", str(tmp_path)], "sparse/0", "cannot read COLMAP model")
    assert len(line) < 400


def test_views_larger_than_available(tmp_path, capsys):
    write_llff(tmp_path, n=10)
    assert_one_line_error(capsys, ["info", str(tmp_path), "--views", "9"], str(tmp_path), "--views 9", "8 available")


def test_malformed_json_and_unsupported_camera(tmp_path, capsys):
    write_blender(tmp_path / "b")
    (tmp_path / "b" / "transforms_test.json").write_text("{ not json")
    assert_one_line_error(capsys, ["info", str(tmp_path / "b")], "transforms_test.json", "not valid JSON")
    write_colmap(tmp_path / "c", n=2, model="FOV", params=(14.0, 14.0, 8.0, 6.0, 0.1))
    assert_one_line_error(capsys, ["info", str(tmp_path / "c")], "cameras.txt", "FOV", "not supported")


def test_resample_option_errors(tmp_path, capsys):
    write_llff(tmp_path, n=4, factors=(4,))
    assert_one_line_error(capsys, ["info", str(tmp_path), "--downscale", "2", "--resolution", "8"], "not both")
    assert_one_line_error(capsys, ["info", str(tmp_path), "--downscale", "2"], "no image folder fine enough", "images_4")


def test_subprocess_error_is_one_line_and_debug_shows_traceback(tmp_path):
    recon = [sys.executable, "-m", "recon.cli"]
    r = subprocess.run([*recon, "info", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"recon: error: {tmp_path / 'missing'}: scene folder does not exist"]
    r = subprocess.run([*recon, "info", str(tmp_path / "missing"), "--debug"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" in r.stderr


@pytest.mark.parametrize(
    "name, views, expect",
    [
        ("llff_fern", "3", {"train": [1, 10, 19], "test": [0, 8, 16], "width": 504, "height": 378, "format": "llff"}),
        ("blender_lego", "8", {"train": [26, 86, 2, 55, 75, 93, 16, 73], "format": "blender", "width": 800}),
    ],
)
def test_real_scenes_through_the_console_script(name, views, expect):
    scene = DATA / name
    if not scene.is_dir():
        pytest.skip(f"real data not present: {scene} (needs /work/shared/data)")
    exe = Path(sys.executable).parent / "recon"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "recon.cli"]
    r = subprocess.run([*cmd, "info", str(scene), "--views", views, "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1
    info = json.loads(r.stdout)
    assert set(info) == KEYS
    for k, v in expect.items():
        assert info[k] == v, k
    if name == "blender_lego":
        assert info["test"] == list(range(100, 300)) and info["n_frames"] == 300 and not info["has_points"]
    else:
        assert info["n_frames"] == 20 and info["has_points"]
