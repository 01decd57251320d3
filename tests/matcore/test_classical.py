"""The classical OpenCV engine behind the same interface as MAT's Inpainter."""
from __future__ import annotations

import numpy as np
import pytest

from matcore import ClassicalInpainter, InpaintEngine

MAGENTA = np.array([255, 0, 255], np.uint8)


def smooth_image(height: int, width: int) -> np.ndarray:
    """A gentle colour gradient: diffusion should restore it closely."""
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([ys * 200 // max(height, 1), xs * 200 // max(width, 1), np.full_like(ys, 90)], -1).astype(np.uint8)


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_fills_the_hole_from_its_surroundings_and_keeps_the_rest(method):
    clean = smooth_image(80, 120)
    hole = np.zeros((80, 120), bool)
    hole[30:40, 50:80] = True
    marked = clean.copy()
    marked[hole] = MAGENTA
    (restored,) = ClassicalInpainter(method=method).inpaint([marked], [hole], [0])
    assert np.array_equal(restored[~hole], marked[~hole])
    assert np.abs(restored[hole].astype(int) - clean[hole].astype(int)).mean() < 10


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (60, 40)])
def test_edge_cases(shape):
    engine = ClassicalInpainter()
    image = smooth_image(*shape)
    empty, full = np.zeros(shape, bool), np.ones(shape, bool)
    results = engine.inpaint_results([image, image], [empty, full], [1, 2])
    assert np.array_equal(results[0].image, image) and results[0].windows == 0
    assert results[1].image.shape == image.shape and results[1].windows == 1


def test_is_an_engine_and_says_what_it_is():
    engine = ClassicalInpainter(method="ns", radius=5)
    assert isinstance(engine, InpaintEngine)
    info = engine.inpaint_results([smooth_image(8, 8)], [np.ones((8, 8), bool)], [0])[0].info
    assert (info.engine, info.model, info.device) == ("opencv", "ns r=5", "cpu")


def test_refuses_bad_settings_and_inputs():
    with pytest.raises(ValueError):
        ClassicalInpainter(method="fmm")
    with pytest.raises(ValueError):
        ClassicalInpainter(radius=0)
    with pytest.raises(ValueError):
        ClassicalInpainter().inpaint([smooth_image(8, 8)], [np.ones((8, 8), np.uint8)], [0])
