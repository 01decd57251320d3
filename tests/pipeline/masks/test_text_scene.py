"""Watermark, not scene: overlay text is masked, text that belongs to the scene is left alone (and the
provenance says why), and a word tiled over the whole picture is found as one tiled watermark."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pipeline.masks import OverlayRule, TextMaskConfig, TextMaskGenerator, dilate_hole
from pipeline.masks.maskio import read_rgb
from pipeline.masks.text_overlay import judge
from pipeline.masks.text_tiled import find_tiled_pattern

from .conftest import paint_text

SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "images"


@pytest.fixture(scope="module")
def generator() -> TextMaskGenerator:
    return TextMaskGenerator()


def recall(hole: np.ndarray, support: np.ndarray) -> float:
    truth = dilate_hole(support, 4)
    return float((hole & truth).sum() / truth.sum())


@pytest.mark.parametrize("name", ["3096", "21077"])
def test_scene_text_of_the_bundled_samples_is_left_alone(generator, name):
    """The plane's tail fin (3096) and the billboards and car numbers (21077) are part of the scene."""
    image = read_rgb(SAMPLES / f"{name}.jpg")
    result = generator(image)
    assert not result.hole.any(), result.details["regions"]
    for region in result.details["regions"]:
        assert not region["kept"] and region["reason"].startswith("scene")


def test_scene_text_is_masked_when_the_user_asks(generator):
    image = read_rgb(SAMPLES / "21077.jpg")
    everything = TextMaskGenerator(TextMaskConfig(keep_scene_text=False))(image)
    assert everything.hole.any() and everything.details["dropped"]["scene"] == 0
    scene_only = generator(image)
    assert scene_only.details["dropped"]["scene"] == len(everything.details["regions"])


def _sign(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A red board with white lettering, photographed (slightly blurred), pasted into the photo."""
    board = Image.new("RGB", (240, 96), (170, 30, 35))
    ImageDraw.Draw(board).text((40, 26), "HOTEL", fill=(235, 235, 225), font=ImageFont.load_default(size=40))
    board = board.filter(ImageFilter.GaussianBlur(1.2))
    image = photo.copy()
    image[180:276, 20:260] = np.asarray(board)
    return image, np.zeros(photo.shape[:2], bool)


def test_a_translucent_watermark_over_the_scene_is_kept_and_a_sign_is_not(generator, photo):
    image, _ = _sign(photo)
    image, watermark = paint_text(image, "© Northlight", (270, 30), size=30, opacity=0.6)
    result = generator(image)
    assert recall(result.hole, watermark) > 0.8
    assert not result.hole[180:276, 20:260].any(), result.details["regions"]
    reasons = {region["text"]: region["reason"] for region in result.details["regions"]}
    assert any(reason.startswith("scene") for reason in reasons.values())
    assert any(reason.startswith("overlay") for reason in reasons.values())


def test_the_rule_is_explicit_and_configurable():
    blend = {"neutral": 0.02, "sharpness": 0.9, "board": 0.3, "translucency": 0.3, "stroke_pixels": 500}
    assert judge(blend, OverlayRule()).overlay
    opaque = {**blend, "translucency": 0.0, "sharpness": 0.7}  # soft rims: the edge cue cannot decide
    verdict = judge(opaque, OverlayRule())
    assert not verdict.overlay and "ambiguous" in verdict.reason
    assert judge(opaque, OverlayRule(ambiguous="overlay")).overlay
    assert judge(opaque, OverlayRule(), tiled=True).overlay
    lit = judge({**blend, "translucency": 1.3}, OverlayRule())
    assert not lit.overlay and "lighting" in lit.reason
    coloured = judge({**blend, "neutral": 0.6}, OverlayRule())
    assert not coloured.overlay and "grey" in coloured.reason
    with pytest.raises(ValueError):
        TextMaskConfig(overlay={"ambiguous": "maybe"})
    with pytest.raises(ValueError, match="valid: ambiguous"):
        TextMaskConfig(overlay={"min_sharpness": 0.5})
    assert TextMaskConfig(overlay={"max_translucency": 0.9}).overlay.max_translucency == 0.9


def test_grey_letters_with_synthetic_edges_are_overlay_when_translucency_cannot_decide():
    opaque = {"neutral": 0.01, "sharpness": 0.92, "board": 0.3, "translucency": 0.0, "stroke_pixels": 500}
    verdict = judge(opaque, OverlayRule())
    assert verdict.overlay and "synthetic" in verdict.reason
    assert judge({**opaque, "translucency": -9.0}, OverlayRule()).overlay  # background too uniform
    for camera_like in ({"sharpness": 0.75}, {"sharpness": 1.6}, {"neutral": 0.1}):
        verdict = judge({**opaque, **camera_like}, OverlayRule())
        assert not verdict.overlay and "ambiguous" in verdict.reason, camera_like
    # The edge cue only breaks ties: letters following the lighting stay scene whatever their edges.
    assert not judge({**opaque, "translucency": 1.3}, OverlayRule()).overlay
    assert not judge(opaque, OverlayRule(synthetic_sharpness=(0.0, 0.0))).overlay
    with pytest.raises(ValueError, match="synthetic_sharpness"):
        OverlayRule(synthetic_sharpness=(1.0, 0.5))


def test_opaque_overlay_text_is_masked_and_the_same_lettering_photographed_is_not(generator, photo):
    """Opaque white letters rendered onto the photo have one-pixel rims: a watermark. The same letters
    softened as a lens and JPEG would soften them (a 1.2 px blur) are lettering in the scene."""
    image, support = paint_text(photo, "PROOF", (40, 30), size=44, opacity=1.0)
    rendered = generator(image)
    assert recall(rendered.hole, support) > 0.8, rendered.details["regions"]
    photographed = image.copy()
    photographed[10:100, 20:220] = np.asarray(
        Image.fromarray(image[10:100, 20:220]).filter(ImageFilter.GaussianBlur(1.2)))
    result = generator(photographed)
    assert not result.hole[support].any(), result.details["regions"]
    assert any(region["reason"].startswith("scene") for region in result.details["regions"])


def _box(x: float, y: float, width: float, height: float) -> np.ndarray:
    return np.array([[x, y], [x + width, y], [x + width, y + height], [x, y + height]], np.float32)


def test_a_word_repeated_over_the_picture_is_a_tiled_pattern():
    grid = [_box(x, y, 120, 30) for y in range(20, 600, 150) for x in range(30, 900, 220)]
    pattern = find_tiled_pattern(grid, ["SAMPLE"] * len(grid), (640, 960))
    assert pattern is not None and len(pattern.members) == len(grid) and pattern.text == "sample"
    # Different words, or the same word in one corner only, are not a tiling.
    assert find_tiled_pattern(grid[:6], ["EXIT", "HOTEL", "BAR", "OPEN", "TAXI", "BUS"], (640, 960)) is None
    huddled = [_box(10 + 5 * i, 10 + 40 * i, 120, 30) for i in range(4)]
    assert find_tiled_pattern(huddled, ["SAMPLE"] * 4, (2000, 3000)) is None


def test_tiled_text_over_a_photo_is_found(generator, photo):
    image, support = photo.copy(), np.zeros(photo.shape[:2], bool)
    for row, y in enumerate(range(10, 300, 70)):
        for x in range(-40 + 60 * (row % 2), 460, 160):
            image, painted = paint_text(image, "SAMPLE", (x, y), size=26, opacity=0.5)
            support |= painted
    result = generator(image)
    assert recall(result.hole, support) > 0.75
    assert result.details["tiled"]["repeats"] >= 4


def _textured(seed: int = 0, shape: tuple[int, int] = (321, 481)) -> np.ndarray:
    """uint8 H×W×3: a smooth random grey texture (blobs a few pixels across), like foliage or rock."""
    import cv2

    noise = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32), (0, 0), 4)
    grey = 120 + 45 * noise / noise.std()
    return np.clip(np.stack([grey + 10, grey, grey - 10], axis=2), 0, 255).astype(np.uint8)


def test_an_opaque_looking_overlay_over_texture_is_kept_by_the_blend_fit(generator):
    """Black "DO NOT COPY" at opacity 0.85 over a textured background: the letters look opaque to the
    translucency cue and their rims look soft, so the rule without the blend fit drops it as ambiguous;
    the blend fit sees one grey colour at one opacity laid over the scene."""
    image, support = paint_text(_textured(), "DO NOT COPY", (20, 20), size=48, color=(0, 0, 0), opacity=0.85)
    result = generator(image)
    assert recall(result.hole, support) > 0.8, result.details["regions"]
    region = max(result.details["regions"], key=lambda r: r["box"][2] - r["box"][0])
    assert region["kept"] and region["reason"].startswith("overlay: one grey colour composited"), region
    cues = region["cues"]
    # One dark grey at an opacity in the watermark range (the fit reads 0.64 here: rims in the core).
    assert 0.1 <= cues["blend_slope"] <= 0.6 and cues["blend_colour"] < 64 and cues["blend_colour_spread"] <= 6
    without_fit = judge(cues, OverlayRule(blend_fit=False))
    assert not without_fit.overlay and "ambiguous" in without_fit.reason


def _lit_sign(background: np.ndarray) -> np.ndarray:
    """White-painted letters on a grey board, lit by warm light that fades across the sign, photographed."""
    coverage = Image.new("L", (300, 90), 0)
    ImageDraw.Draw(coverage).text((18, 18), "HOTEL BAR", fill=255, font=ImageFont.load_default(size=44))
    letters = np.asarray(coverage, np.float32)[..., None] / 255.0
    reflectance = np.array([0.35, 0.36, 0.38]) * (1 - letters) + np.array([0.92, 0.92, 0.90]) * letters
    light = np.linspace(0.45, 1.0, 300, dtype=np.float32)[None, :, None] * np.array([1.0, 0.92, 0.8])
    image = background.astype(np.float32)
    image[120:210, 90:390] = reflectance * light * 255
    photographed = Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(photographed)


def test_a_painted_sign_lit_across_by_the_scene_is_not_an_overlay(generator):
    result = generator(_lit_sign(_textured(1)))
    assert not result.hole[120:210, 90:390].any(), result.details["regions"]
    reasons = [region["reason"] for region in result.details["regions"]]
    assert reasons and all(reason.startswith("scene") for reason in reasons), reasons


def test_the_blend_fit_needs_one_grey_colour_at_one_opacity():
    # Opaque-looking to the translucency cue, soft rims: ambiguous without the fit.
    base = {"neutral": 0.01, "sharpness": 0.7, "board": 0.3, "translucency": 0.0, "stroke_pixels": 500,
            "blend_slope": 0.25, "blend_colour": 2.0, "blend_colour_spread": 1.0, "blend_slope_gap": 0.05}
    verdict = judge(base, OverlayRule())
    assert verdict.overlay and "composited" in verdict.reason and "opacity 0.75" in verdict.reason
    assert judge({**base, "blend_slope_gap": -9.0}, OverlayRule()).overlay  # one half too flat: no veto
    for not_a_blend in ({"blend_colour_spread": 30.0},  # tinted: lettering lit by coloured light
                        {"sharpness": 0.5},             # camera-soft rims: a blur fakes the slope
                        {"blend_slope_gap": 0.6},       # the opacity changes along the word
                        {"blend_slope": 0.9},           # letters follow the background: the scene's lighting
                        {"blend_slope": -9.0},          # background too flat to fit
                        {"neutral": 0.5}):              # coloured lettering
        verdict = judge({**base, **not_a_blend}, OverlayRule())
        assert not verdict.overlay, (not_a_blend, verdict.reason)
    assert not judge(base, OverlayRule(blend_fit=False)).overlay
    assert judge({**base, "blend_colour_spread": 30.0}, OverlayRule(max_blend_colour_spread=40)).overlay
    assert TextMaskConfig(overlay={"blend_fit": False}).overlay.blend_fit is False
    with pytest.raises(ValueError, match="max_blend_colour_spread"):
        OverlayRule(max_blend_colour_spread=-1)
