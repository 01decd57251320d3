"""Build a ready-to-run Generator from a checkpoint file or a registry name.

The architecture is inferred from the weights (resolution from the encoder's first block, noise inputs
from their presence), so official pickles, IOPaint's `.pth` and our safetensors all load the same way.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from matcore.generator import SUPPORTED_RESOLUTIONS, Generator

log = logging.getLogger(__name__)

# Buffers the model computes from its configuration; a checkpoint's copies carry no information.
COMPUTED_BUFFER_SUFFIXES = (".resample_filter", ".attn_mask")
_ENCODER_KEY = re.compile(r"^synthesis\.enc\.EncConv_Block_(\d+)x\1\.conv0\.weight$")
_warned_no_noise = False


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the MAT generator; the message lists what differs."""


def infer_resolution(state_dict: dict[str, torch.Tensor]) -> int:
    """The encoder has one block per resolution from the input size down to 16: the largest is the input."""
    found = [int(m.group(1)) for m in map(_ENCODER_KEY.match, state_dict) if m]
    if not found:
        raise CheckpointMismatchError(
            "not a MAT generator state dict: no 'synthesis.enc.EncConv_Block_RxR.conv0.weight' entry"
        )
    resolution = max(found)
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise CheckpointMismatchError(f"unsupported resolution {resolution} (MAT has {SUPPORTED_RESOLUTIONS})")
    return resolution


def _strip_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "G_ema.", "generator.", "model."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def generator_from_state_dict(state_dict: dict[str, torch.Tensor], device: str | torch.device = "cpu") -> Generator:
    """Instantiate the matching Generator and load `state_dict` into it, strictly (computed buffers aside)."""
    global _warned_no_noise
    state_dict = _strip_prefix(dict(state_dict))
    resolution = infer_resolution(state_dict)
    use_noise = any(k.endswith(".noise_strength") for k in state_dict)
    if not use_noise and not _warned_no_noise:
        log.warning("checkpoint has no decoder noise inputs (IOPaint-style export): running with noise disabled")
        _warned_no_noise = True

    generator = Generator(resolution, use_noise=use_noise)
    expected = generator.state_dict()
    given = {k: v for k, v in state_dict.items() if not k.endswith(COMPUTED_BUFFER_SUFFIXES)}
    wanted = {k for k in expected if not k.endswith(COMPUTED_BUFFER_SUFFIXES)}
    missing = sorted(wanted - given.keys())
    unexpected = sorted(k for k in given if k not in expected)
    mismatched = sorted(
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in wanted & given.keys()
        if given[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", … ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointMismatchError(f"checkpoint does not fit MAT-{resolution}: " + "; ".join(parts))

    generator.load_state_dict({k: v.float() for k, v in given.items()}, strict=False)
    return generator.eval().requires_grad_(False).to(device)


def load_generator(path_or_name: str | Path, device: str | torch.device = "cpu", *, cache_dir: str | Path | None = None,
                   download: bool = False) -> Generator:
    """Load a MAT generator from a `.pkl` / `.pth` / `.safetensors` file or a known checkpoint name.

    Official pickles are read with a restricted unpickler (no embedded code runs); the EMA generator
    (`G_ema`) is used when the file holds several networks.
    """
    from matcore.checkpoints import read_checkpoint
    from matcore.registry import resolve_checkpoint

    path = resolve_checkpoint(path_or_name, cache_dir=cache_dir, download=download)
    networks = read_checkpoint(path)
    for name in ("G_ema", "G"):
        if name in networks:
            return generator_from_state_dict(networks[name], device)
    raise CheckpointMismatchError(f"{path}: no generator in checkpoint (networks: {sorted(networks)})")
