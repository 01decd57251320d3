"""SAM: a tiny randomly initialised SAM, built from segment_anything's own classes and saved as a state
dict, loads through the real checkpoint path; prompts come from tables, COCO files, or another
generator's boxes; absent or wrong checkpoints fail with a message that says what to do."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.masks import (
    SAM_CHECKPOINTS,
    MaskResult,
    SamArchitecture,
    SamCheckpointError,
    SamMaskConfig,
    SamMaskGenerator,
    SamPrompts,
    build_sam,
    load_sam,
    published_architecture,
)
from pipeline.masks.sam_loading import architecture_from_state_dict

TINY = SamArchitecture(
    encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=(1,),
    encoder_mlp_ratio=2.0, image_size=64, patch_size=8, window_size=4, prompt_embed_dim=32, mask_in_chans=8,
    decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=8, attention_downsample_rate=2,
    num_multimask_outputs=3, iou_head_depth=2, iou_head_hidden_dim=32,
)
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random SAM saved as a plain state dict, like the published .pth files."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(build_sam(TINY).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_model(checkpoint):
    return load_sam(checkpoint)


def test_architecture_is_read_back_from_the_state_dict(checkpoint, tiny_model):
    state_dict = torch.load(checkpoint, weights_only=True)
    assert architecture_from_state_dict(state_dict) == TINY
    torch.testing.assert_close(tiny_model.state_dict(), state_dict)


def test_published_vit_b_architecture_round_trips():
    from segment_anything import sam_model_registry

    reference = sam_model_registry["vit_b"]()  # random weights, the package's own vit_b layout
    assert architecture_from_state_dict(reference.state_dict()) == published_architecture("vit_b")


def test_box_prompt_gives_a_mask_of_the_image_size_kept_near_the_box(tiny_model):
    box = [10, 8, 40, 30]
    raw = SamMaskGenerator(SamMaskConfig(device="cpu", clip_to_box=False), model=tiny_model)
    clipped = SamMaskGenerator(SamMaskConfig(device="cpu", box_margin=0.1), model=tiny_model)
    unclipped = raw.segment(IMAGE, SamPrompts(boxes=[box]))
    result = clipped.segment(IMAGE, SamPrompts(boxes=[box]))
    assert result.hole.shape == IMAGE.shape[:2] and result.hole.dtype == bool
    # Random weights spill over the whole image; clipping keeps the box grown by 10 % (3 px, 2.2 px).
    assert unclipped.hole[:, 50:].any()
    zone = np.zeros(IMAGE.shape[:2], bool)
    zone[5:34, 7:44] = True
    np.testing.assert_array_equal(result.hole, unclipped.hole & zone)
    np.testing.assert_array_equal(result.boxes, [box])
    assert result.scores.shape == (1,)


def test_points_and_boxes_from_a_prompt_table(tiny_model, tmp_path):
    table = tmp_path / "prompts.parquet"
    pq.write_table(pa.table({
        "path": ["a/cat.jpg", "dog.jpg"],
        "boxes": [[[0.0, 0.0, 20.0, 20.0], [30.0, 10.0, 60.0, 40.0]], []],
        "points": [[], [[40.0, 20.0], [5.0, 5.0]]],
        "point_labels": [[], [1, 0]],
    }), table)
    generator = SamMaskGenerator(SamMaskConfig(prompts=table, device="cpu"), model=tiny_model)
    cat = generator(IMAGE, key="a/cat.jpg")
    assert len(cat.boxes) == 2 and cat.details["prompts"] == 2
    dog = generator(IMAGE, key="dog.jpg")
    assert len(dog.boxes) == 1 and dog.hole.shape == IMAGE.shape[:2]
    nobody = generator(IMAGE, key="unknown.jpg")
    assert not nobody.hole.any() and nobody.details["prompts"] == 0


def test_coco_boxes_filtered_by_category(tiny_model, tmp_path):
    coco = tmp_path / "instances.json"
    coco.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "street/img.jpg", "width": 80, "height": 48}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 5, 10, 20]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [40, 10, 30, 20]},
        ],
    }))
    generator = SamMaskGenerator(SamMaskConfig(coco=coco, categories=("car",), device="cpu"), model=tiny_model)
    result = generator(IMAGE, key="street/img.jpg")
    np.testing.assert_array_equal(result.boxes, [[40, 10, 70, 30]])
    with pytest.raises(ValueError, match="category 'bus' is not in"):
        SamMaskGenerator(SamMaskConfig(coco=coco, categories=("bus",), device="cpu"), model=tiny_model)


def test_refiner_prompts_sam_with_the_boxes_of_another_generator(tiny_model):
    class FixedBoxes:
        method = "text"

        def __call__(self, image, *, key=None):
            return MaskResult(hole=np.zeros(image.shape[:2], bool), method="text", boxes=[[4, 4, 30, 20]], scores=[0.9])

    generator = SamMaskGenerator(SamMaskConfig(device="cpu"), model=tiny_model, box_source=FixedBoxes())
    result = generator(IMAGE)
    np.testing.assert_array_equal(result.boxes, [[4, 4, 30, 20]])
    assert result.details["refined"] == "text"


def test_absent_checkpoint_says_where_to_put_which_file(tmp_path):
    with pytest.raises(SamCheckpointError) as error:
        load_sam(model_type="vit_b", cache_dir=tmp_path)
    message = str(error.value)
    spec = SAM_CHECKPOINTS["vit_b"]
    assert spec.filename in message and spec.url in message and str(tmp_path) in message
    with pytest.raises(SamCheckpointError, match="does not exist"):
        load_sam(tmp_path / "nope.pth")


def test_corrupt_published_file_fails_its_checksum(tmp_path):
    fake = tmp_path / SAM_CHECKPOINTS["vit_b"].filename
    fake.write_bytes(b"not the weights")
    with pytest.raises(SamCheckpointError, match="md5"):
        load_sam(model_type="vit_b", cache_dir=tmp_path)


def test_a_file_that_is_not_sam_or_not_the_requested_type_is_refused(checkpoint, tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(SamCheckpointError, match="not a Segment Anything state dict"):
        load_sam(other)
    with pytest.raises(SamCheckpointError, match="custom encoder, not vit_b"):
        load_sam(checkpoint, model_type="vit_b")


def test_pickled_objects_are_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    hostile = tmp_path / "hostile.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": Payload()}, hostile)
    with pytest.raises(SamCheckpointError, match="cannot read"):
        load_sam(hostile)


def test_one_prompt_source_at_a_time(tmp_path):
    table = tmp_path / "prompts.jsonl"
    table.write_text("")
    with pytest.raises(ValueError, match="choose one prompt source, got prompts, refine"):
        SamMaskConfig(prompts=table, refine="text")
    with pytest.raises(ValueError, match="categories filter COCO annotations"):
        SamMaskConfig(categories=("person",))
