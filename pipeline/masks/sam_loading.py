"""Segment Anything checkpoints: where they are, whether they are intact, and how to load them safely.

The published files (`sam_vit_b/l/h_*.pth`) are plain state dicts, loaded with
`torch.load(weights_only=True)` — never by unpickling arbitrary objects. The network is built from the
`segment_anything` package's own classes with an architecture read off the state dict's shapes, so any
checkpoint in SAM's layout loads (including the tiny ones the tests build), and a file that is not
what its name says is caught before use.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .base import GeneratorSetupError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SamCheckpoint:
    """A published SAM checkpoint: file name, md5 published with it, and where to download it."""

    model_type: str
    filename: str
    md5: str
    url: str
    size_note: str


SAM_CHECKPOINTS: dict[str, SamCheckpoint] = {
    spec.model_type: spec
    for spec in (
        SamCheckpoint("vit_b", "sam_vit_b_01ec64.pth", "01ec64d29a2fca3f0661936605ae66f8",
                      "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", "375 MB"),
        SamCheckpoint("vit_l", "sam_vit_l_0b3195.pth", "0b3195507c641ddb6910d2bb5adee89c",
                      "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth", "1.25 GB"),
        SamCheckpoint("vit_h", "sam_vit_h_4b8939.pth", "4b8939a88964f0f4ff5f5b2642c598a6",
                      "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth", "2.56 GB"),
    )
}


class SamCheckpointError(GeneratorSetupError):
    """The SAM checkpoint is missing, corrupt, or not a SAM state dict; the message says what to do."""


@dataclass(frozen=True)
class SamArchitecture:
    """Hyper-parameters of a SAM network (those of `segment_anything.build_sam._build_sam`)."""

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    encoder_mlp_ratio: float
    image_size: int
    patch_size: int
    window_size: int
    prompt_embed_dim: int
    mask_in_chans: int
    decoder_depth: int
    decoder_mlp_dim: int
    decoder_num_heads: int
    attention_downsample_rate: int
    num_multimask_outputs: int
    iou_head_depth: int
    iou_head_hidden_dim: int


# The three published encoders (segment_anything/build_sam.py); the decoder is the same for all.
PUBLISHED_ENCODERS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
# Not recoverable from tensor shapes; 8 in every published SAM.
DECODER_NUM_HEADS = 8


def default_cache_dir() -> Path:
    """The project's checkpoint cache (`$MATPIPE_CACHE_DIR`, else the XDG cache), shared with MAT weights."""
    from matcore.registry import default_cache_dir as project_cache_dir

    return project_cache_dir()


def resolve_sam_checkpoint(
    checkpoint: str | os.PathLike[str] | None = None,
    model_type: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The SAM checkpoint file to load.

    An explicit `checkpoint` path must exist. Otherwise the published file of `model_type` (default
    vit_b) is looked up in `cache_dir` (default: `default_cache_dir()`). Raises SamCheckpointError
    saying where to put the file when it is absent (nothing is downloaded: model hubs are often
    unreachable from workers).
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise SamCheckpointError(f"SAM checkpoint {path} does not exist")
        return path
    model_type = model_type or "vit_b"
    if model_type not in SAM_CHECKPOINTS:
        raise SamCheckpointError(f"unknown SAM model type {model_type!r} (known: {', '.join(SAM_CHECKPOINTS)})")
    spec = SAM_CHECKPOINTS[model_type]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / spec.filename
    if not path.is_file():
        raise SamCheckpointError(
            f"SAM checkpoint {spec.filename} ({model_type}, {spec.size_note}) not found in {folder}. "
            f"Download it from {spec.url} (md5 {spec.md5}) and put it there, set MATPIPE_CACHE_DIR to the "
            "folder holding it, or pass the file explicitly (--sam-checkpoint PATH)."
        )
    return path


_VERIFIED: set[tuple[str, int, float]] = set()


def verify_sam_checkpoint(path: Path) -> None:
    """Check a file named like a published checkpoint against its published md5 (once per process)."""
    spec = next((s for s in SAM_CHECKPOINTS.values() if s.filename == path.name), None)
    if spec is None:
        return  # a fine-tuned or custom file: nothing published to compare with
    stat = path.stat()
    marker = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if marker in _VERIFIED:
        return
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != spec.md5:
        raise SamCheckpointError(
            f"{path} has md5 {digest.hexdigest()}, expected {spec.md5} for {spec.filename}: the file is corrupt "
            f"or incomplete; download it again from {spec.url}"
        )
    _VERIFIED.add(marker)


def _count_indexed(state_dict: dict[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indexes = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indexes) + 1 if indexes else 0


def architecture_from_state_dict(state_dict: dict[str, Any]) -> SamArchitecture:
    """Read a SAM architecture off the shapes of its state dict.

    The encoder's heads follow from the relative-position tables (2·size−1 rows × head_dim); global
    blocks are those whose table spans the whole token grid. Raises SamCheckpointError when the dict is
    not in SAM's layout.
    """
    try:
        patch_weight = state_dict["image_encoder.patch_embed.proj.weight"]
        embed_dim, patch_size = int(patch_weight.shape[0]), int(patch_weight.shape[-1])
        grid = int(state_dict["image_encoder.pos_embed"].shape[1])
        depth = _count_indexed(state_dict, "image_encoder.blocks.")
        head_dim = int(state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
        table_rows = [int(state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(depth)]
        global_indexes = tuple(i for i, rows in enumerate(table_rows) if rows == 2 * grid - 1)
        windowed = [rows for rows in table_rows if rows != 2 * grid - 1]
        window_size = (windowed[0] + 1) // 2 if windowed else 0
        mlp_dim = int(state_dict["image_encoder.blocks.0.mlp.lin1.weight"].shape[0])
        prompt_dim = int(state_dict["image_encoder.neck.0.weight"].shape[0])
        mask_in_chans = 4 * int(state_dict["prompt_encoder.mask_downscaling.0.weight"].shape[0])
        decoder_prefix = "mask_decoder.transformer.layers."
        internal_dim = int(state_dict[f"{decoder_prefix}0.cross_attn_token_to_image.q_proj.weight"].shape[0])
        iou_prefix = "mask_decoder.iou_prediction_head.layers."
        return SamArchitecture(
            encoder_embed_dim=embed_dim,
            encoder_depth=depth,
            encoder_num_heads=embed_dim // head_dim,
            encoder_global_attn_indexes=global_indexes,
            encoder_mlp_ratio=mlp_dim / embed_dim,
            image_size=grid * patch_size,
            patch_size=patch_size,
            window_size=window_size,
            prompt_embed_dim=prompt_dim,
            mask_in_chans=mask_in_chans,
            decoder_depth=_count_indexed(state_dict, decoder_prefix),
            decoder_mlp_dim=int(state_dict[f"{decoder_prefix}0.mlp.lin1.weight"].shape[0]),
            decoder_num_heads=DECODER_NUM_HEADS,
            attention_downsample_rate=prompt_dim // internal_dim,
            num_multimask_outputs=int(state_dict["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
            iou_head_depth=_count_indexed(state_dict, iou_prefix),
            iou_head_hidden_dim=int(state_dict[f"{iou_prefix}0.weight"].shape[0]),
        )
    except (KeyError, IndexError, AttributeError) as exc:
        raise SamCheckpointError(f"not a Segment Anything state dict (missing or malformed {exc})") from None


def build_sam(architecture: SamArchitecture) -> Any:
    """An untrained `segment_anything.modeling.Sam` with `architecture` (eval mode, on CPU)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    a = architecture
    grid = a.image_size // a.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=a.image_size, patch_size=a.patch_size, embed_dim=a.encoder_embed_dim, depth=a.encoder_depth,
            num_heads=a.encoder_num_heads, mlp_ratio=a.encoder_mlp_ratio, out_chans=a.prompt_embed_dim,
            qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=a.window_size, global_attn_indexes=a.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a.prompt_embed_dim, image_embedding_size=(grid, grid),
            input_image_size=(a.image_size, a.image_size), mask_in_chans=a.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=a.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=a.decoder_depth, embedding_dim=a.prompt_embed_dim, mlp_dim=a.decoder_mlp_dim,
                num_heads=a.decoder_num_heads, attention_downsample_rate=a.attention_downsample_rate,
            ),
            transformer_dim=a.prompt_embed_dim, iou_head_depth=a.iou_head_depth,
            iou_head_hidden_dim=a.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def load_sam(
    checkpoint: str | os.PathLike[str] | None = None,
    model_type: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    verify_checksum: bool = True,
) -> Any:
    """Load a SAM model (`segment_anything.modeling.Sam`, eval mode) from a checkpoint file.

    checkpoint: a file; None = the published `model_type` file (default vit_b) in the cache dir (see
    `resolve_sam_checkpoint`). Published files are checked against their md5 when `verify_checksum`.
    The architecture is read from the file; when `model_type` is given and the file holds a different
    encoder, that is an error (a vit_h file passed as vit_b usually means a wrong path).
    """
    import torch

    path = resolve_sam_checkpoint(checkpoint, model_type, cache_dir)
    if verify_checksum:
        verify_sam_checkpoint(path)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types; all mean "not a loadable state dict"
        raise SamCheckpointError(f"cannot read SAM checkpoint {path}: {exc}") from exc
    if isinstance(state_dict, dict) and "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]  # training checkpoints wrap the weights
    if not isinstance(state_dict, dict):
        raise SamCheckpointError(f"{path} does not hold a state dict")
    architecture = architecture_from_state_dict(state_dict)
    expected = PUBLISHED_ENCODERS.get(model_type or "")
    found = (architecture.encoder_embed_dim, architecture.encoder_depth, architecture.encoder_num_heads,
             architecture.encoder_global_attn_indexes)
    published_name = next((name for name, encoder in PUBLISHED_ENCODERS.items() if encoder == found), None)
    if expected is not None and found != expected:
        raise SamCheckpointError(f"{path} holds a {published_name or 'custom'} encoder, not {model_type}")
    sam = build_sam(architecture)
    try:
        sam.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise SamCheckpointError(f"{path} does not match the SAM architecture read from it: {exc}") from exc
    log.info("loaded SAM %s from %s", published_name or f"custom ({architecture.encoder_embed_dim}-dim)", path)
    return sam.to(device)


def published_architecture(model_type: str) -> SamArchitecture:
    """The architecture of a published SAM (`vit_b`, `vit_l`, `vit_h`), as `build_sam` expects it."""
    try:
        embed_dim, depth, heads, global_indexes = PUBLISHED_ENCODERS[model_type]
    except KeyError:
        known = ", ".join(PUBLISHED_ENCODERS)
        raise SamCheckpointError(f"unknown SAM model type {model_type!r} (known: {known})") from None
    return SamArchitecture(
        encoder_embed_dim=embed_dim, encoder_depth=depth, encoder_num_heads=heads,
        encoder_global_attn_indexes=global_indexes, encoder_mlp_ratio=4.0, image_size=1024, patch_size=16,
        window_size=14, prompt_embed_dim=256, mask_in_chans=16, decoder_depth=2, decoder_mlp_dim=2048,
        decoder_num_heads=DECODER_NUM_HEADS, attention_downsample_rate=2, num_multimask_outputs=3,
        iou_head_depth=3, iou_head_hidden_dim=256,
    )
