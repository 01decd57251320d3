"""The inpaint stage inverts `consistent` watermarks when the template carries a matte, and records it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import ConfigError, EngineConfig, JobConfig
from pipeline.stages import InpaintStage, objects
from pipeline.watermark import add_matte_to_template

from .conftest import blend, footprint_psnr, scenes, template_npz_bytes
from .test_invert import exact_matte


def _template_npz(coverage: np.ndarray, opacity: float) -> bytes:
    return add_matte_to_template(template_npz_bytes(coverage > 0.2), exact_matte(coverage, opacity, (255, 255, 255)))


def _batch(data, method: str) -> dict[str, np.ndarray]:
    holes, details = [], []
    for (y, x), alpha in zip(data.offsets, data.alpha):
        holes.append(alpha > 0)
        box = [x, y, x + data.coverage.shape[1], y + data.coverage.shape[0]]
        details.append(json.dumps({"method": method, "boxes": [box], "scores": [0.9],
                                   "details": {"matched": True, "scale": 1.0}}))
    rows = len(holes)
    return {"id": objects([f"row{i}" for i in range(rows)]), "status": objects([""] * rows),
            "error": objects([""] * rows), "image": objects(data.marked), "hole": objects(holes),
            "mask_method": objects([method] * rows), "mask_details": objects(details)}


@pytest.fixture(scope="module")
def watermarked():
    return blend(scenes(3, seed=21), opacity=0.5, jitter=0)


def test_consistent_rows_are_inverted_not_inpainted(watermarked):
    stage = InpaintStage(EngineConfig(name="opencv"), template_npz=_template_npz(watermarked.coverage, 0.5))
    out = stage(_batch(watermarked, "consistent"))
    for index in range(3):
        assert out["status"][index] == "ok" and out["engine"][index] == "invert"
        footprint = int((watermarked.alpha[index] > 1 / 255).sum())
        # The stage re-fits the placement (sub-pixel), so the inverted footprint may differ by a rim pixel.
        assert abs(out["hole_inverted_px"][index] - footprint) <= 0.02 * footprint
        assert out["hole_inverted_px"][index] <= (watermarked.alpha[index] > 0).sum()
        assert out["hole_inpainted_px"][index] == 0
        assert out["invert_residual"][index] < 0.3
        assert footprint_psnr(out["restored"][index], watermarked.clean[index], watermarked.alpha[index]) > 38
        # The hole column still says what was touched.
        assert np.array_equal(np.asarray(out["hole"][index]), watermarked.alpha[index] > 0)


def test_invert_off_and_other_mask_methods_inpaint_as_before(watermarked):
    npz = _template_npz(watermarked.coverage, 0.5)
    for stage, method in ((InpaintStage(EngineConfig(name="opencv", invert="off"), template_npz=npz), "consistent"),
                          (InpaintStage(EngineConfig(name="opencv"), template_npz=npz), "text"),
                          (InpaintStage(EngineConfig(name="opencv")), "consistent")):
        out = stage(_batch(watermarked, method))
        assert list(out["engine"]) == ["opencv"] * 3
        assert list(out["hole_inverted_px"]) == [0] * 3
        assert [int(v) for v in out["hole_inpainted_px"]] == [int((a > 0).sum()) for a in watermarked.alpha]


def test_engine_invert_is_validated_up_front():
    base = {"inputs": {"uris": ["x"]}, "output": {"uri": "y"}}
    assert JobConfig.from_mapping({**base, "engine": {"invert": "off"}}).engine.invert == "off"
    with pytest.raises(ConfigError, match="engine.invert"):
        JobConfig.from_mapping({**base, "engine": {"invert": "sometimes"}})
    with pytest.raises(ConfigError, match="engine.invert_options"):
        JobConfig.from_mapping({**base, "engine": {"invert_options": {"alpha_maximum": 0.9}}})
    with pytest.raises(ConfigError, match="alpha_max"):
        JobConfig.from_mapping({**base, "engine": {"invert_options": {"alpha_max": 1.5}}})


def test_report_shows_the_matte_and_colour(watermarked):
    from pipeline.watermark.report import matte_images, watermark_section

    npz = _template_npz(watermarked.coverage, 0.5)
    section = watermark_section(npz)
    assert section.count("<img") == 2 and "matte α" in section and "colour W" in section
    assert watermark_section(None) == ""
    alpha_image, color_image = matte_images(exact_matte(watermarked.coverage, 0.5, (255, 0, 0)))
    peak = alpha_image == alpha_image.max()
    assert alpha_image.max() == round(0.5 * 255) and (color_image[peak] == (255, 0, 0)).all()


def test_a_faint_watermark_the_template_missed_is_confirmed_by_the_matte_and_inverted():
    # 0.3 opacity, placement off by a pixel (the generator's best, below-threshold match); a clean
    # scene at the same place must be left alone.
    from pipeline.watermark import Placement
    from pipeline.watermark.restore import InversionStep

    data = blend(scenes(3, seed=5), opacity=0.3, jitter=0)
    step = InversionStep(exact_matte(data.coverage, 0.3, (255, 255, 255)))
    for index in range(3):
        y, x = data.offsets[index]
        found = step.invert_unmatched(data.marked[index], Placement(float(y + 1), float(x - 1)))
        assert found is not None
        hole, outcome = found
        # The hole covers the whole footprint (what the mask column must then record as touched).
        assert hole[data.alpha[index] > 1 / 255].all()
        assert outcome.inverted_px >= 0.95 * (data.alpha[index] > 1 / 255).sum()
        # Left as it is, the footprint scores about 15 dB; a refined placement and opacity recover it.
        assert footprint_psnr(outcome.image, data.clean[index], data.alpha[index]) > 35
        untouched = step.invert_unmatched(data.clean[index], Placement(float(y), float(x)))
        assert untouched is None


def test_the_stage_inverts_a_faint_watermark_the_template_missed_and_leaves_clean_rows_alone():
    """A consistent row with an empty mask (match below threshold) carries its best match; the inpainting
    stage asks the matte there: the watermarked rows are inverted and their hole becomes the footprint
    touched, the clean row stays untouched (no hole, no engine)."""
    data = blend(scenes(3, seed=5), opacity=0.3, jitter=0)
    rows = 4
    images = [*data.marked, data.clean[0]]
    details = []
    for index in range(rows):
        y, x = data.offsets[min(index, 2)]
        details.append(json.dumps({"method": "consistent", "boxes": [], "scores": [], "hole_ratio": 0.0,
                                   "details": {"matched": False, "scale": 1.0, "best_yx": [y + 1, x - 1]}}))
    empty = np.zeros(images[0].shape[:2], bool)
    batch = {"id": objects([f"row{i}" for i in range(rows)]), "status": objects([""] * rows),
             "error": objects([""] * rows), "image": objects(images), "hole": objects([empty] * rows),
             "hole_ratio": np.zeros(rows), "mask_method": objects(["consistent"] * rows),
             "mask_details": objects(details)}
    stage = InpaintStage(EngineConfig(name="opencv"), template_npz=_template_npz(data.coverage, 0.3))
    out = stage(batch)
    for index in range(3):
        footprint = data.alpha[index] > 1 / 255
        assert out["status"][index] == "ok" and out["engine"][index] in ("invert", "invert+opencv")
        assert np.asarray(out["hole"][index])[footprint].all() and out["hole_ratio"][index] > 0
        assert json.loads(out["mask_details"][index])["details"]["matched"] == "matte"
        assert footprint_psnr(out["restored"][index], data.clean[index], data.alpha[index]) > 30
    assert not np.asarray(out["hole"][3]).any() and not out["engine"][3]
    assert out["hole_ratio"][3] == 0


def test_the_matte_is_asked_at_the_fits_size_and_offset_when_the_best_match_is_elsewhere():
    """A faint watermark whose best template match lies at a wrong place and scale (as for faint logos on
    busy photos): the row's candidates at the fit's size and offset (details.fit_geometry) are tried too,
    and the one the matte confirms is inverted; a clean scene with the same candidates is left alone."""
    from pipeline.watermark.restore import InversionStep

    data = blend(scenes(3, seed=9), opacity=0.3, jitter=0)
    step = InversionStep(exact_matte(data.coverage, 0.3, (255, 255, 255)))

    def details(y: int, x: int) -> str:
        return json.dumps({"method": "consistent", "boxes": [], "details": {
            "matched": False, "scale": 1.12, "best_yx": [y - 14, x + 9],
            "fit_geometry": [[y + 9, x - 9, 1.0], [y + 1, x - 1, 1.0]]}})

    for index in range(3):
        y, x = data.offsets[index]
        # The wrong best match alone does not confirm it.
        wrong = json.dumps({"method": "consistent", "details": {"matched": False, "scale": 1.12, "best_yx": [y - 14, x + 9]}})
        assert step.confirm_unmatched(data.marked[index], "consistent", wrong) is None
        found = step.confirm_unmatched(data.marked[index], "consistent", details(y, x))
        assert found is not None
        hole, outcome = found
        assert hole[data.alpha[index] > 1 / 255].all()
        assert footprint_psnr(outcome.image, data.clean[index], data.alpha[index]) > 35
        assert step.confirm_unmatched(data.clean[index], "consistent", details(y, x)) is None
        # Other mask methods and matched rows are not this path.
        assert step.confirm_unmatched(data.marked[index], "text", details(y, x)) is None
        matched = json.dumps({"method": "consistent", "details": {"matched": True, "fit_geometry": [[y, x, 1.0]]}})
        assert step.confirm_unmatched(data.marked[index], "consistent", matched) is None


def test_the_stage_inverts_a_faint_watermark_found_at_the_fits_size_and_offset():
    """The job's path: an unmatched consistent row whose best match is elsewhere but whose fit-geometry
    candidate lies on the watermark is inverted by the inpainting stage, and its mask says so."""
    data = blend(scenes(2, seed=13), opacity=0.3, jitter=0)
    details = []
    for y, x in data.offsets:
        details.append(json.dumps({"method": "consistent", "boxes": [], "scores": [], "hole_ratio": 0.0, "details": {
            "matched": False, "scale": 0.88, "best_yx": [y + 12, x - 15], "fit_geometry": [[y, x + 1, 1.0]]}}))
    empty = np.zeros(data.marked[0].shape[:2], bool)
    batch = {"id": objects(["a", "b"]), "status": objects([""] * 2), "error": objects([""] * 2),
             "image": objects(data.marked), "hole": objects([empty] * 2), "hole_ratio": np.zeros(2),
             "mask_method": objects(["consistent"] * 2), "mask_details": objects(details)}
    out = InpaintStage(EngineConfig(name="opencv"), template_npz=_template_npz(data.coverage, 0.3))(batch)
    for index in range(2):
        assert out["engine"][index] in ("invert", "invert+opencv")
        assert np.asarray(out["hole"][index])[data.alpha[index] > 1 / 255].all()
        assert json.loads(out["mask_details"][index])["details"]["matched"] == "matte"
        assert footprint_psnr(out["restored"][index], data.clean[index], data.alpha[index]) > 30


def test_a_candidate_a_few_pixels_off_is_scanned_onto_the_watermark():
    """The matte's energy has a narrow basin (about ±1.5 px for a thin logo); an unmatched image's
    candidates, a few px apart, are scanned in whole pixels first, so a start 3 px off diagonally still
    confirms the faint watermark, while the clean scene scanned the same way is left alone."""
    from pipeline.watermark import Placement
    from pipeline.watermark.restore import InversionStep

    data = blend(scenes(3, seed=17), opacity=0.3, jitter=0)
    step = InversionStep(exact_matte(data.coverage, 0.3, (255, 255, 255)))
    for index in range(3):
        y, x = data.offsets[index]
        found = step.invert_unmatched(data.marked[index], Placement(float(y + 3), float(x - 3)))
        assert found is not None
        assert footprint_psnr(found[1].image, data.clean[index], data.alpha[index]) > 35
        assert step.invert_unmatched(data.clean[index], Placement(float(y + 3), float(x - 3))) is None


def test_a_clean_image_is_turned_down_at_the_first_look_and_a_watermarked_one_is_confirmed_as_before(monkeypatch):
    """Every clean image of a dataset the template does not match pays the matte check: its starts are
    looked at (best opacity where they start) before any is hill-climbed, and none is climbed when no
    first look removes a quarter of `min_gain`. Watermarked images get exactly the full search's answer;
    a clean one is turned down as before, for well under half the energy evaluations."""
    from pipeline.watermark import Placement, align
    from pipeline.watermark.restore import UNMATCHED_SCAN_PX, best_alignment, confirm_watermark

    calls = {"n": 0}
    energy = align._Evaluator.energy

    def counted(self, placement):
        calls["n"] += 1
        return energy(self, placement)

    monkeypatch.setattr(align._Evaluator, "energy", counted)
    data = blend(scenes(4, seed=9), opacity=0.3, jitter=0)
    matte = exact_matte(data.coverage, 0.3, (255, 255, 255))
    for index in range(4):
        y, x = data.offsets[index]
        candidates = [Placement(float(y + 1), float(x - 1)), Placement(float(y + 3), float(x - 3))]
        full = best_alignment(data.marked[index], matte, candidates, scan_px=UNMATCHED_SCAN_PX)
        confirmed = confirm_watermark(data.marked[index], matte, candidates)
        assert confirmed is not None and confirmed.aligned == full

        calls["n"] = 0
        clean_full = best_alignment(data.clean[index], matte, candidates, scan_px=UNMATCHED_SCAN_PX)
        full_calls, calls["n"] = calls["n"], 0
        assert confirm_watermark(data.clean[index], matte, candidates) is None
        assert clean_full.gain < 0.02 and calls["n"] < 0.5 * full_calls
