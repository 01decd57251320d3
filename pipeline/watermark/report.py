"""The estimated watermark in the HTML report: its matte α and colour W as images, with the figures
that say how it was fitted."""
from __future__ import annotations

import base64
import html
import io

import numpy as np
from PIL import Image

from .matte import WatermarkMatte, load_matte

_SCALE = 2  # watermarks are small: show them enlarged, pixel by pixel


def _png(array: np.ndarray) -> str:
    image = Image.fromarray(array)
    image = image.resize((image.width * _SCALE, image.height * _SCALE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def matte_images(matte: WatermarkMatte) -> tuple[np.ndarray, np.ndarray]:
    """(α as uint8 grey h×w, W composited by α over a grey checkerboard, uint8 h×w×3)."""
    alpha = np.clip(matte.alpha, 0, 1)
    height, width = alpha.shape
    checker = ((np.arange(height)[:, None] // 8 + np.arange(width)[None, :] // 8) % 2) * 60.0 + 100.0
    shown = np.clip(alpha / max(float(alpha.max()), 1e-6), 0, 1)[..., None]  # full-strength colour where α peaks
    color = matte.color * shown + checker[..., None] * (1 - shown)
    return (alpha * 255).round().astype(np.uint8), np.clip(color, 0, 255).round().astype(np.uint8)


def watermark_section(template_npz: bytes | None) -> str:
    """An HTML <section> showing the matte saved in a job's template ("" when there is none)."""
    matte = load_matte(template_npz) if template_npz else None
    if matte is None:
        return ""
    alpha_image, color_image = matte_images(matte)
    opacity = matte.fit_opacity
    facts = (f"matte {matte.shape[1]}×{matte.shape[0]} px, α max {float(matte.alpha.max()):.2f}, "
             f"estimated from {len(opacity)} images (per-image opacity factor {float(opacity.min()):.2f}–"
             f"{float(opacity.max()):.2f})" if len(opacity) else "")
    return ("<section><h2>Watermark (estimated from the dataset, inverted where α &lt; 1)</h2>"
            f"<figure><img alt='alpha' src='{_png(alpha_image)}'><figcaption>matte α (white = opaque)</figcaption></figure>"
            f"<figure><img alt='colour' src='{_png(color_image)}'><figcaption>colour W (shown where α &gt; 0)</figcaption></figure>"
            f"<p>{html.escape(facts)}</p></section>")
