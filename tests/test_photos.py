"""Pose-free photo folders: detection, listing with EXIF focal lengths, refusals, `recon info`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scenes import ReconError, detect_format, load_scene
from recon.report import print_info
from scenes.photos import list_photos, one_camera


def _photo(path, w=64, h=48, *, seed=0, focal_mm=None, focal_35=None, plane_res=None, pixel_x=None, camera=("Canon", "EOS")):
    """Write a noise photo with optional EXIF focal tags (``plane_res``: pixels per inch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    if camera:
        exif[0x010F], exif[0x0110] = camera
    ifd = exif.get_ifd(0x8769)
    if focal_mm is not None:
        ifd[0x920A] = (int(focal_mm * 100), 100)
    if focal_35 is not None:
        ifd[0xA405] = focal_35
    if plane_res is not None:
        ifd[0xA20E], ifd[0xA210] = (int(plane_res), 1), 2
    if pixel_x is not None:
        ifd[0xA002] = pixel_x
    Image.fromarray(img).save(path, exif=exif, quality=95)
    return path


def test_folder_of_photos_is_detected_and_listed_with_exif_focal(tmp_path):
    _photo(tmp_path / "b.jpg", 80, 60, focal_mm=4.2, focal_35=28)
    _photo(tmp_path / "a.jpg", 80, 60, focal_mm=4.2, focal_35=28, seed=1)
    assert detect_format(tmp_path) == "photos"
    photos = list_photos(tmp_path)
    assert [p.path.name for p in photos] == ["a.jpg", "b.jpg"]
    p = photos[0]
    assert (p.width, p.height, p.focal_mm, p.focal_35mm, p.camera) == (80, 60, 4.2, 28.0, "Canon EOS")
    assert p.focal_px == pytest.approx(28 / 36 * 80)
    assert one_camera(photos)
    with pytest.raises(ReconError, match="without camera poses"):
        load_scene(tmp_path)


def test_focal_from_focal_plane_resolution_and_photos_in_images(tmp_path):
    # 5 mm lens, 1000 px per inch on the sensor, file downsized from 4000 to 64 px wide
    _photo(tmp_path / "images" / "x.png", focal_mm=5.0, plane_res=1000, pixel_x=4000)
    _photo(tmp_path / "images" / "y.png", 48, 64, camera=None)  # portrait, no EXIF
    assert detect_format(tmp_path) == "photos"
    x, y = list_photos(tmp_path)
    assert x.focal_px == pytest.approx(5.0 * 1000 / 25.4 * 64 / 4000) and x.focal_35mm is None
    assert (y.width, y.height, y.focal_px, y.focal_mm, y.camera) == (48, 64, None, None, None)
    assert not one_camera([x, y])


def test_refusals_name_the_file(tmp_path):
    _photo(tmp_path / "one" / "a.jpg")
    with pytest.raises(ReconError, match="has 1 photo") as err:
        list_photos(tmp_path / "one")
    assert str(tmp_path / "one") in str(err.value)
    bad = tmp_path / "bad"
    _photo(bad / "a.jpg")
    data = _photo(bad / "b.jpg", 256, 256, seed=3).read_bytes()
    (bad / "b.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG: the header still parses
    assert detect_format(bad) == "photos"
    with pytest.raises(ReconError, match="truncated") as err:
        list_photos(bad)
    assert "b.jpg" in str(err.value) and "\n" not in str(err.value)
    (bad / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(ReconError, match="unreadable") as err:
        list_photos(bad)
    assert "b.jpg" in str(err.value)


def test_recon_info_json_lists_the_photos(tmp_path, capsys):
    for i in range(3):
        _photo(tmp_path / f"p{i}.jpg", 80, 60, focal_35=50, seed=i)
    assert print_info(tmp_path, as_json=True) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "photos" and info["n_frames"] == 3 and (info["width"], info["height"]) == (80, 60)
    assert info["one_camera"] is True
    assert [p["path"] for p in info["photos"]] == [str(tmp_path / f"p{i}.jpg") for i in range(3)]
    assert info["photos"][1]["focal_px"] == pytest.approx(50 / 36 * 80)
    assert print_info(tmp_path) == 0
    text = capsys.readouterr().out
    assert "photos" in text and "p2.jpg  80 x 60" in text and "111.1 px" in text


def test_recon_info_cli_refuses_a_truncated_photo_in_one_line(tmp_path, capsys):
    from recon.cli import main

    _photo(tmp_path / "a.jpg")
    data = _photo(tmp_path / "b.jpg", 256, 256, seed=3).read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[:300])
    assert main(["info", str(tmp_path), "--json"]) == 1
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1 and "b.jpg" in out.err
