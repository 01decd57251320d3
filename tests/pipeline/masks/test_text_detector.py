"""Text detector plumbing: the model comes from an installed wheel, never the network; providers follow
what onnxruntime offers; large images are detected in tiles."""
from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from pipeline.masks import GeneratorSetupError, TextMaskConfig, TextMaskGenerator, dilate_hole
from pipeline.masks.text import plan_views
from pipeline.masks.text_detector import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    DETECTOR_MODELS,
    DetectorModel,
    select_providers,
)

from .conftest import paint_text


def test_the_default_detector_is_pp_ocrv6_from_the_rapidocr_wheel():
    path = DETECTOR_MODELS[TextMaskConfig().detector].path()
    assert path.name == "PP-OCRv6_det_small.onnx" and "rapidocr" in path.parts and path.stat().st_size > 1e6


def test_a_missing_wheel_says_what_to_install():
    model = DetectorModel("nowhere", "no_such_ocr_wheel", "models/x.onnx", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(GeneratorSetupError, match="pip install no-such-ocr-wheel"):
        model.path()


def test_the_generator_runs_without_any_network(monkeypatch, photo):
    def refuse(*args, **kwargs):
        raise AssertionError("the text generator tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    image, support = paint_text(photo, "PREVIEW 2024", (40, 40), size=30, opacity=0.7)
    result = TextMaskGenerator(TextMaskConfig(device="cpu"))(image)
    assert (result.hole & support).sum() > 0.8 * support.sum()
    assert result.details["provider"] == CPU_PROVIDER and result.details["detector"] == "PP-OCRv6_det_small.onnx"


@pytest.mark.parametrize(("device", "available", "visible", "expected"), [
    ("auto", [CPU_PROVIDER], None, [CPU_PROVIDER]),
    ("auto", [CUDA_PROVIDER, CPU_PROVIDER], None, [CUDA_PROVIDER, CPU_PROVIDER]),
    ("auto", [CUDA_PROVIDER, CPU_PROVIDER], "0", [CUDA_PROVIDER, CPU_PROVIDER]),
    # A Ray actor without num_gpus sees no device: stay on the CPU rather than fail at the first forward.
    ("auto", [CUDA_PROVIDER, CPU_PROVIDER], "", [CPU_PROVIDER]),
    ("cpu", [CUDA_PROVIDER, CPU_PROVIDER], "0", [CPU_PROVIDER]),
    ("cuda", [CUDA_PROVIDER, CPU_PROVIDER], "0", [CUDA_PROVIDER, CPU_PROVIDER]),
])
def test_providers_follow_availability(monkeypatch, device, available, visible, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert select_providers(device, available) == expected


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(GeneratorSetupError, match="onnxruntime-gpu"):
        select_providers("cuda", [CPU_PROVIDER])
    with pytest.raises(ValueError, match="device"):
        TextMaskConfig(device="tpu")


def test_large_images_are_detected_in_overlapping_full_resolution_tiles():
    config = TextMaskConfig(max_side=1024)
    views, scale = plan_views((2000, 3000), config)
    assert scale == 1.0 and len(views) == 3 * 4  # 2000 / 3000 px in 1024 px tiles
    covered = np.zeros((2000, 3000), np.int32)
    for view in views:
        y0, x0, y1, x1 = view.window
        assert max(y1 - y0, x1 - x0) <= 1024 and view.size[0] % 32 == 0
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1 and covered.max() >= 2  # every pixel seen, tiles overlap
    # Without tiling the whole picture is shrunk into one view; small photos are upscaled to min_side.
    (single,), shrink = plan_views((2000, 3000), TextMaskConfig(max_side=1024, tile=False))
    assert shrink < 0.5 and max(single.size) == 1024
    (small,), grow = plan_views((321, 481), config)
    assert grow > 1 and min(small.size) >= config.min_side - 32


def test_small_images_are_upscaled_to_the_longer_side_asked_for():
    """min_long_side upscales a 481×321 photo to a 960 px long side; min_side alone stops at 720."""
    (by_short,), scale_short = plan_views((321, 481), TextMaskConfig(min_side=480, min_long_side=0))
    assert by_short.size == (480, 704) and scale_short == pytest.approx(480 / 321)
    (by_long,), scale_long = plan_views((321, 481), TextMaskConfig(min_side=480, min_long_side=960))
    assert by_long.size == (640, 960) and scale_long == pytest.approx(960 / 481)
    # Photos already that large are left alone (no extra cost at ~1 MP), and max_side still caps.
    (large,), one = plan_views((768, 1024), TextMaskConfig(min_long_side=960))
    assert one == 1.0 and large.size == (768, 1024)
    (capped,), capped_scale = plan_views((100, 200), TextMaskConfig(min_long_side=2000, max_side=1024, tile=False))
    assert max(capped.size) == 1024 and capped_scale == pytest.approx(1024 / 200)
    with pytest.raises(ValueError, match="min_long_side"):
        TextMaskConfig(min_long_side=-1)


def test_passes_are_validated():
    with pytest.raises(ValueError, match="passes"):
        TextMaskConfig(passes=("plain", "sharpen"))
    with pytest.raises(ValueError, match="passes"):
        TextMaskConfig(passes=())


def test_a_small_photo_is_detected_upscaled_and_its_small_overlay_text_masked(photo):
    """A 481×321 photo is detected with its longer side at min_long_side, and provenance says so."""
    image, support = paint_text(photo, "www.shotbank.io", (30, 260), size=11, opacity=0.7)
    result = TextMaskGenerator(TextMaskConfig(min_long_side=800))(image)
    assert result.details["detector_scale"] == pytest.approx(800 / 481, abs=1e-3)
    assert result.details["detector_views"] == 1
    truth = dilate_hole(support, 4)
    assert (result.hole & truth).sum() > 0.9 * truth.sum()
    assert (result.hole & truth).sum() > 0.8 * result.hole.sum()


def test_a_photo_of_about_one_megapixel_can_be_detected_whole_at_full_resolution():
    """A 4:3 or 16:9 photo of ~1 MP has a longer side above max_side: two overlapping tiles by default;
    with single_view_max_pixels = 1024² one full-resolution forward (~1.7× less work)."""
    shapes = ((866, 1155), (720, 1280), (1155, 866))
    for shape in shapes:
        views, scale = plan_views(shape, TextMaskConfig(max_side=1024))
        assert len(views) == 2 and scale == 1.0
    config = TextMaskConfig(max_side=1024, single_view_max_pixels=1024 * 1024)
    for shape in shapes:
        (view,), scale = plan_views(shape, config)
        assert scale == 1.0 and view.window == (0, 0, *shape)
        assert view.size[0] * view.size[1] <= 1024 * 1024 and abs(view.size[0] - shape[0]) <= 16
    # A little over the budget (800 × 1344 = 1.03 × 1024²) and the photo is tiled again.
    views, _ = plan_views((800, 1344), config)
    assert len(views) == 2
    # Without tiling a large photo is still shrunk to max_side, whatever its pixel count.
    (shrunk,), shrink = plan_views((720, 1280), TextMaskConfig(max_side=1024, tile=False,
                                                               single_view_max_pixels=1024 * 1024))
    assert max(shrunk.size) == 1024 and shrink == pytest.approx(1024 / 1280)
    with pytest.raises(ValueError, match="single_view_max_pixels"):
        TextMaskConfig(single_view_max_pixels=-1)


class _SessionOnProviders:
    """A real CPU session that reports the providers it was asked for, as onnxruntime-gpu on a GPU would."""

    def __init__(self, real, path, options, providers):
        names = [p if isinstance(p, str) else p[0] for p in providers]
        self.asked = names
        self._session = real(path, options, providers=[CPU_PROVIDER])

    def get_providers(self):
        return self.asked

    def __getattr__(self, name):
        return getattr(self._session, name)


def _fake_cuda_onnxruntime(monkeypatch) -> list[tuple[str, list[str]]]:
    """onnxruntime (and rapidocr's view of it) offering CUDA on a GPU; returns the sessions' requests."""
    import onnxruntime as ort
    from rapidocr_onnxruntime.utils import infer_engine

    asked: list[tuple[str, list[str]]] = []
    real = ort.InferenceSession

    def session(path, sess_options=None, providers=None, **kwargs):
        opened = _SessionOnProviders(real, path, sess_options, providers or [CPU_PROVIDER])
        asked.append((Path(path).name, opened.asked))
        return opened

    for module in (ort, infer_engine):
        monkeypatch.setattr(module, "InferenceSession", session)
        monkeypatch.setattr(module, "get_available_providers", lambda: [CUDA_PROVIDER, CPU_PROVIDER])
    monkeypatch.setattr(infer_engine, "get_device", lambda: "GPU")
    return asked


def test_on_a_gpu_actor_the_detector_and_the_recogniser_run_on_cuda(monkeypatch, photo):
    asked = _fake_cuda_onnxruntime(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    image, support = paint_text(photo, "PREVIEW 2024", (40, 40), size=30, opacity=0.7)
    result = TextMaskGenerator(TextMaskConfig(device="auto"))(image)
    assert dict(asked) == {"PP-OCRv6_det_small.onnx": [CUDA_PROVIDER, CPU_PROVIDER],
                           "ch_PP-OCRv4_rec_infer.onnx": [CUDA_PROVIDER, CPU_PROVIDER]}
    assert result.details["provider"] == CUDA_PROVIDER and result.details["recognizer_provider"] == CUDA_PROVIDER
    assert (result.hole & support).sum() > 0.8 * support.sum()


def test_an_actor_without_a_gpu_keeps_both_networks_on_the_cpu(monkeypatch, photo):
    """Ray gives an actor without num_gpus CUDA_VISIBLE_DEVICES="": CUDA is installed but not this actor's."""
    asked = _fake_cuda_onnxruntime(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = TextMaskGenerator(TextMaskConfig(device="auto"))(photo)
    assert dict(asked) == {"PP-OCRv6_det_small.onnx": [CPU_PROVIDER], "ch_PP-OCRv4_rec_infer.onnx": [CPU_PROVIDER]}
    assert result.details["provider"] == CPU_PROVIDER
