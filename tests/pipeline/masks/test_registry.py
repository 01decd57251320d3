"""The generator registry and config validation at the edge; MaskResult's contract."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.masks import MASK_GENERATORS, MaskResult, build_mask_generator, default_postprocess, make_config


def test_every_registered_generator_has_a_config_and_defaults():
    assert set(MASK_GENERATORS) == {"given", "text", "consistent", "sam"}
    for method in MASK_GENERATORS:
        assert default_postprocess(method).max_hole_ratio <= 1.0


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: given, text, consistent, sam"):
        build_mask_generator("ocr")


def test_unknown_option_is_rejected_with_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown option\(s\) for TextMaskConfig: postion .*valid: .*position"):
        make_config("text", {"postion": "corners"})


def test_strings_become_paths_and_values_are_validated(tmp_path):
    config = make_config("given", {"mask_dir": str(tmp_path)})
    assert config.mask_dir == Path(tmp_path)
    with pytest.raises(ValueError, match="position must be"):
        make_config("text", {"position": "top"})
    with pytest.raises(ValueError, match="exactly one of mask_dir or parquet"):
        make_config("given", {})


def test_mask_result_checks_its_arrays_and_its_provenance_is_json():
    with pytest.raises(ValueError, match="H×W"):
        MaskResult(hole=np.zeros((2, 2, 1), bool), method="x")
    with pytest.raises(ValueError, match="1 boxes but 0 scores"):
        MaskResult(hole=np.zeros((2, 2), bool), method="x", boxes=[[0, 0, 1, 1]])
    result = MaskResult(hole=np.eye(4, dtype=bool), method="x", boxes=[[0, 0, 4, 4]], scores=[0.9],
                        details={"note": "ok"})
    provenance = json.loads(json.dumps(result.provenance()))
    assert provenance["hole_ratio"] == 0.25 and provenance["boxes"] == [[0.0, 0.0, 4.0, 4.0]]
