"""Recovering what an alpha-blended watermark hides, instead of inpainting it.

A watermark blended as J = α·W + (1 − α)·I leaves the original pixels I scaled by (1 − α). From many
images that carry it (found by the `consistent` mask generator), `estimate` recovers the watermark's
matte α and colour W (multi-image matting, Dekel et al., CVPR 2017); `align` fits it to each image
(sub-pixel position, scale, opacity); `invert` recovers I with a prior that keeps noise down, and hands
only saturated or untrustworthy pixels to an inpainting engine; `restore` is that step for the job.
"""
from .align import AlignedWatermark, align_watermark
from .estimate import MatteEstimationConfig, MatteEstimationError, MatteFit, estimate_matte
from .invert import InversionConfig, InversionResult, invert_watermark
from .matte import Placement, WatermarkMatte, add_matte_to_template, load_matte
from .restore import INVERT_MODES, InversionOutcome, InversionStep

__all__ = [
    "AlignedWatermark", "INVERT_MODES", "InversionConfig", "InversionOutcome", "InversionResult", "InversionStep",
    "MatteEstimationConfig", "MatteEstimationError", "MatteFit", "Placement", "WatermarkMatte",
    "add_matte_to_template", "align_watermark", "estimate_matte", "invert_watermark", "load_matte",
]
