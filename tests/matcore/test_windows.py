"""Window planning (matcore.windows): which squares the model sees for holes of any size. No model here."""
from __future__ import annotations

import math
import zlib

import cv2
import numpy as np
import pytest

from matcore.windows import WindowConfig, WindowPlan, plan_windows

R = 256
MARGIN = R // 8


def components_8(hole: np.ndarray) -> tuple[int, np.ndarray]:
    """Reference 8-connected labelling from an independent implementation (OpenCV)."""
    count, labels = cv2.connectedComponents(hole.astype(np.uint8), connectivity=8)
    return count - 1, labels


def check_plan(hole: np.ndarray, plan: WindowPlan, resolution: int = R, margin: int = MARGIN) -> None:
    """The invariants every plan must keep."""
    height, width = hole.shape
    assert plan.owner.shape == hole.shape
    # Every hole pixel is filled by exactly one window; nothing else is touched.
    assert ((plan.owner >= 0) == hole).all()
    assert plan.owner.max(initial=-1) < len(plan.windows)
    # Each connected hole is filled by one window: no seam runs through a hole.
    count, labels = components_8(hole)
    label_owner_pairs = np.unique(labels[hole].astype(np.int64) * (len(plan.windows) + 1) + plan.owner[hole])
    assert len(label_owner_pairs) == count
    for index, window in enumerate(plan.windows):
        assert window.resolution == resolution and window.side >= resolution
        for start, extent in ((window.top, height), (window.left, width)):
            if window.side <= extent:  # the window lies inside the image along this axis
                assert 0 <= start <= extent - window.side
            else:  # the image is centred in it, padded on both sides
                assert start == -((window.side - extent) // 2)
        ys, xs = np.nonzero(plan.owner == index)
        assert len(ys), "a window that fills nothing is a wasted forward"
        ring = math.floor(margin * window.side / resolution)
        y0, y1, x0, x1 = window.image_box(height, width)
        # Owned pixels keep a known ring from every window edge inside the image.
        assert ys.min() >= (y0 + ring if y0 > 0 else 0) and ys.max() < (y1 - ring if y1 < height else height)
        assert xs.min() >= (x0 + ring if x0 > 0 else 0) and xs.max() < (x1 - ring if x1 < width else width)


def random_hole(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Rectangles, specks and 1-px strokes, some touching the borders."""
    hole = np.zeros((height, width), bool)
    for _ in range(rng.integers(1, 6)):
        h, w = rng.integers(1, max(2, height // 3)), rng.integers(1, max(2, width // 3))
        y, x = rng.integers(0, height), rng.integers(0, width)
        hole[y:y + h, x:x + w] = True
    for _ in range(rng.integers(0, 20)):
        hole[rng.integers(0, height), rng.integers(0, width)] = True
    if rng.random() < 0.5:  # a diagonal 1-px stroke
        length = rng.integers(1, min(height, width) + 1)
        y, x = rng.integers(0, height - length + 1), rng.integers(0, width - length + 1)
        hole[y + np.arange(length), x + np.arange(length)] = True
    return hole


@pytest.mark.parametrize("strategy", ["auto", "crop", "resize"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (100, 60), (256, 256), (321, 481), (700, 300), (1200, 1600)])
def test_random_holes_keep_every_invariant(shape, strategy):
    rng = np.random.default_rng(zlib.crc32(repr((shape, strategy)).encode()))
    for _ in range(6):
        hole = random_hole(rng, *shape)
        check_plan(hole, plan_windows(hole, R, WindowConfig(strategy=strategy)))


def test_empty_mask_needs_no_window():
    plan = plan_windows(np.zeros((40, 50), bool), R)
    assert plan.windows == ()
    assert (plan.owner == -1).all()


def test_small_hole_gets_a_full_resolution_window_centred_on_it():
    hole = np.zeros((1000, 1500), bool)
    hole[480:520, 700:780] = True
    (window,) = plan_windows(hole, R).windows
    assert window.side == R and window.scale == 1.0
    assert abs((window.top + R / 2) - 500) <= 1 and abs((window.left + R / 2) - 740) <= 1


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_window_shifts_inward_at_borders(corner):
    height, width = 600, 900
    hole = np.zeros((height, width), bool)
    ys = slice(0, 20) if "top" in corner else slice(height - 20, height)
    xs = slice(0, 30) if "left" in corner else slice(width - 30, width)
    hole[ys, xs] = True
    plan = plan_windows(hole, R)
    check_plan(hole, plan)
    (window,) = plan.windows
    assert window.top == (0 if "top" in corner else height - R)
    assert window.left == (0 if "left" in corner else width - R)


def test_hole_too_big_for_a_window_is_downscaled_with_context():
    hole = np.zeros((2000, 2000), bool)
    hole[800:1200, 900:1300] = True  # 400 px: more than a 256 window can hold with context
    plan = plan_windows(hole, R, WindowConfig(context=1.5))
    check_plan(hole, plan)
    (window,) = plan.windows
    assert window.side == 600 and window.scale == pytest.approx(R / 600)
    assert window.top <= 800 and window.top + window.side >= 1200


def test_hole_covering_the_image_gets_the_whole_image():
    hole = np.ones((700, 1000), bool)
    plan = plan_windows(hole, R)
    check_plan(hole, plan)
    (window,) = plan.windows
    assert (window.side, window.left, window.top) == (1000, 0, -150)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 7), (100, 60)])
def test_small_images_are_padded_to_one_window(shape):
    hole = np.zeros(shape, bool)
    hole[0, 0] = True
    hole[-1, -1] = True  # far corners: still one window, as the whole image fits
    plan = plan_windows(hole, R)
    check_plan(hole, plan)
    (window,) = plan.windows
    assert window.side == R
    assert window.top == -((R - shape[0]) // 2) and window.left == -((R - shape[1]) // 2)


def test_wide_strip_image_is_padded_only_across():
    hole = np.zeros((100, 2000), bool)
    hole[40:60, 1000:1050] = True
    plan = plan_windows(hole, R)
    check_plan(hole, plan)
    (window,) = plan.windows
    assert window.top == -((R - 100) // 2)
    assert 0 <= window.left <= 1000 and window.left + R >= 1050


def test_nearby_specks_share_a_window_and_distant_ones_do_not():
    hole = np.zeros((1000, 3000), bool)
    for x in range(100, 200, 10):  # ten specks within 100 px: one window
        hole[500, x] = True
    hole[500, 2800] = True  # 2600 px away: its own window
    plan = plan_windows(hole, R, WindowConfig(strategy="crop"))
    check_plan(hole, plan)
    assert len(plan.windows) == 2
    assert len(np.unique(plan.owner[500, 100:200:10])) == 1


def test_many_scattered_specks_need_few_windows():
    rng = np.random.default_rng(0)
    hole = rng.random((1024, 1024)) < 0.002  # ~2000 specks
    plan = plan_windows(hole, R, WindowConfig(strategy="crop"))
    check_plan(hole, plan)
    core = min(math.floor(R / 1.5), R - 2 * MARGIN)
    assert len(plan.windows) <= math.ceil(1024 / core + 1) ** 2


def test_long_diagonal_stroke_is_one_connected_hole():
    hole = np.zeros((900, 900), bool)
    idx = np.arange(50, 850)
    hole[idx, idx] = True  # 8-connected only: a 4-connected labelling would see 800 specks
    plan = plan_windows(hole, R, WindowConfig(strategy="crop"))
    check_plan(hole, plan)
    (window,) = plan.windows
    assert window.side == 900  # 800 px × context 1.5 = 1200, capped at the whole image


def test_resize_strategy_uses_the_whole_image():
    hole = np.zeros((400, 300), bool)
    hole[10:20, 10:20] = True
    plan = plan_windows(hole, R, WindowConfig(strategy="resize"))
    check_plan(hole, plan)
    (window,) = plan.windows
    assert (window.side, window.top, window.left) == (400, 0, -50)


def test_auto_trades_several_windows_for_one_slightly_coarser_whole_image_window():
    hole = np.zeros((300, 360), bool)
    hole[5:10, 5:10] = True
    hole[290:295, 350:355] = True  # opposite corners: two full-resolution windows for "crop"
    crop = plan_windows(hole, R, WindowConfig(strategy="crop"))
    auto = plan_windows(hole, R, WindowConfig(strategy="auto", auto_downscale=1.5))
    check_plan(hole, crop)
    check_plan(hole, auto)
    assert [w.side for w in crop.windows] == [R, R]
    assert [w.side for w in auto.windows] == [360]  # 360 / 256 = 1.4× coarser: one forward instead of two


def test_auto_keeps_full_resolution_windows_when_the_whole_image_is_much_larger():
    hole = np.zeros((600, 600), bool)
    hole[5:10, 5:10] = True
    hole[590:595, 590:595] = True
    auto = plan_windows(hole, R, WindowConfig(strategy="auto", auto_downscale=1.5))
    check_plan(hole, auto)
    assert [w.side for w in auto.windows] == [R, R]


def test_plan_depends_on_the_mask_alone():
    rng = np.random.default_rng(3)
    hole = random_hole(rng, 800, 1200)
    first, second = plan_windows(hole, R), plan_windows(hole.copy(), R)
    assert first.windows == second.windows
    assert (first.owner == second.owner).all()


def test_larger_margin_and_context_give_more_surroundings():
    hole = np.zeros((2000, 2000), bool)
    hole[900:1100, 900:1100] = True
    tight = plan_windows(hole, R, WindowConfig(context=1.0, margin=8)).windows[0]
    roomy = plan_windows(hole, R, WindowConfig(context=3.0, margin=8)).windows[0]
    assert tight.side == R and roomy.side == 600


@pytest.mark.parametrize("config", [
    dict(strategy="tile"), dict(context=0.5), dict(context=float("nan")), dict(margin=-1), dict(auto_downscale=0.9),
])
def test_invalid_config_is_refused(config):
    with pytest.raises(ValueError):
        WindowConfig(**config)


def test_margin_leaving_no_room_is_refused():
    with pytest.raises(ValueError):
        plan_windows(np.ones((10, 10), bool), R, WindowConfig(margin=R // 2))


def test_non_bool_mask_is_refused():
    with pytest.raises(ValueError):
        plan_windows(np.full((10, 10), 255, np.uint8), R)
