"""Sparse-view splits: pure functions, and the real scenes' published splits when the data exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenes.splits import BLENDER_TRAIN_8, blender_split, holdout_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_llff_fern_sized_holdout_splits():
    train, test = holdout_split(20, 3)
    assert train == [1, 10, 19] and test == [0, 8, 16]
    assert holdout_split(20, 6)[0] == [1, 4, 7, 12, 15, 19]
    assert holdout_split(20, 9)[0] == [1, 3, 5, 7, 10, 12, 14, 17, 19]
    train, test = holdout_split(20, None)
    assert train == [i for i in range(20) if i % 8] and test == [0, 8, 16]


def test_holdout_edge_cases():
    assert holdout_split(1, None) == ([0], [])
    assert holdout_split(9, 1) == ([1], [0, 8])
    with pytest.raises(ValueError, match="larger than the 17"):
        holdout_split(20, 18)
    with pytest.raises(ValueError, match="at least 1"):
        holdout_split(20, 0)
    with pytest.raises(ValueError):
        holdout_split(0, None)


def test_blender_splits():
    train, test = blender_split(100, 200, 8)
    assert train == [26, 86, 2, 55, 75, 93, 16, 73] == list(BLENDER_TRAIN_8)
    assert test == list(range(100, 300))
    assert blender_split(100, 200, 8, test_every=8)[1] == [100 + 8 * j for j in range(25)]
    assert blender_split(100, 200, None)[0] == list(range(100))
    assert blender_split(100, 200, 3)[0] == [0, 50, 99]  # other counts: evenly spaced
    assert blender_split(20, 5, 8)[0] == [0, 3, 5, 8, 11, 14, 16, 19]  # too few frames for the standard ids
    with pytest.raises(ValueError):
        blender_split(100, 200, 101)


def _published(name: str) -> dict:
    path = DATA / name / "splits_sparse_view.json"
    if not path.is_file():
        pytest.skip(f"real data not present: {path} (needs /work/shared/data)")
    return json.loads(path.read_text())


@pytest.mark.parametrize("n", [3, 6, 9])
def test_real_fern_matches_published_splits(n):
    from scenes import load_scene

    pub = _published("llff_fern")
    scene = load_scene(DATA / "llff_fern", views=n)
    assert list(scene.train_ids) == pub[f"train_{n}"]
    assert list(scene.test_ids) == pub["test"]


def test_real_lego_matches_published_split():
    from scenes import load_scene

    pub = _published("blender_lego")
    scene = load_scene(DATA / "blender_lego", views=8, test_every=8)
    assert list(scene.train_ids) == pub["train_8"]
    assert [i - 100 for i in scene.test_ids] == pub["test_every8"]
