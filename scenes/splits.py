"""Sparse-view train/test splits as the papers define them (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: DietNeRF / FreeNeRF / DNGaussian 8-view Blender split: indices into transforms_train.json.
BLENDER_TRAIN_8: tuple[int, ...] = (26, 86, 2, 55, 75, 93, 16, 73)

#: RegNeRF / pixelNeRF DTU split: 3 views = the first 3, 6 = the first 6, 9 = all 9.
DTU_TRAIN: tuple[int, ...] = (25, 22, 28, 40, 44, 48, 0, 8, 13)
#: RegNeRF / pixelNeRF DTU test views (25 of the 49 camera positions).
DTU_TEST: tuple[int, ...] = (1, 2, 9, 10, 11, 12, 14, 15, 23, 24, 26, 27, 29, 30, 31, 32, 33, 34, 35, 41, 42, 43, 45, 46, 47)


def holdout_split(n_frames: int, views: int | None, *, hold_every: int = 8) -> tuple[list[int], list[int]]:
    """LLFF / RegNeRF protocol for scenes without an official split.

    Test = every ``hold_every``-th frame (0, 8, 16, ...) in file-name order; train =
    ``rest[round(linspace(0, len(rest) - 1, views))]``; ``views=None`` means all of ``rest``.
    Raises ValueError when more views are asked for than there are non-test frames.
    """
    if n_frames <= 0:
        raise ValueError("scene has no frames")
    test = list(range(0, n_frames, hold_every)) if n_frames > 1 else []
    rest = [i for i in range(n_frames) if i not in set(test)]
    return _pick(rest, views), test


def blender_split(
    n_train_file: int, n_test_file: int, views: int | None, *, test_every: int = 1
) -> tuple[list[int], list[int]]:
    """Blender protocol. Frames are numbered train file first, then test file.

    ``views=8`` gives the standard frames [26, 86, 2, 55, 75, 93, 16, 73]; other counts take
    evenly spaced frames of the train file; ``None`` takes all of it. Test = the test file's
    frames (every ``test_every``-th, 1 = all 200 for final numbers, 8 = 25 views for speed).
    """
    test = [n_train_file + i for i in range(0, n_test_file, test_every)]
    if views == 8 and n_train_file > max(BLENDER_TRAIN_8):
        return list(BLENDER_TRAIN_8), test
    return _pick(list(range(n_train_file)), views), test


def _pick(candidates: Sequence[int], views: int | None) -> list[int]:
    if views is None:
        return list(candidates)
    if views < 1:
        raise ValueError(f"--views must be at least 1, got {views}")
    if views > len(candidates):
        raise ValueError(f"--views {views} is larger than the {len(candidates)} available training frames")
    picks = np.round(np.linspace(0, len(candidates) - 1, views)).astype(int)
    return [int(candidates[i]) for i in picks]


def holdout_split_for(root, n_frames: int, views: int | None) -> tuple[list[int], list[int]]:
    """``holdout_split`` for the scene at ``root``: an impossible ``views`` is a one-line ReconError."""
    from scenes.errors import ReconError

    try:
        return holdout_split(n_frames, views)
    except ValueError as err:
        raise ReconError(root, str(err)) from None


def dtu_split(
    n_frames: int, views: int | None, *, train_order: Sequence[int] = DTU_TRAIN, test: Sequence[int] = DTU_TEST
) -> tuple[list[int], list[int]]:
    """RegNeRF DTU protocol: train = the first ``views`` ids of ``train_order`` (3 -> 25, 22, 28).

    ``views=None`` trains on every frame that is not a test view. Raises ValueError when the
    scene has fewer frames than the split names, or when more views are asked for than the
    protocol orders (use all views instead).
    """
    ids = list(train_order) + list(test)
    if ids and max(ids) >= n_frames:
        raise ValueError(f"DTU split names frame {max(ids)} but the scene has {n_frames} frames")
    test_l = [int(i) for i in test]
    if views is None:
        held = set(test_l)
        return [i for i in range(n_frames) if i not in held], test_l
    if views < 1:
        raise ValueError(f"--views must be at least 1, got {views}")
    if views > len(train_order):
        raise ValueError(f"the DTU protocol orders {len(train_order)} training views; --views {views} is more (use --views all)")
    return [int(i) for i in train_order[:views]], test_l
