"""The public Ray Data stages, one by one on numpy batches, and composed in a user's own pipeline."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pipeline.config import EngineConfig
from pipeline.stages import (
    DecodeStage,
    EncodeStage,
    InpaintStage,
    MaskStage,
    MetricsStage,
    objects,
    row_seed,
    run_stages,
)

from .conftest import REPO_ROOT, encode, hole_box, make_image_folder, textured_image, write_mask


def batch_of(items: dict[str, bytes]) -> dict[str, np.ndarray]:
    """What `ray.data.read_binary_files(include_paths=True)` hands a stage."""
    return {"bytes": objects(list(items.values())), "path": objects(list(items))}


def test_decode_turns_each_bad_input_into_a_failed_row_and_keeps_the_others():
    good = encode(textured_image(10, 12, 0), "PNG")
    rgba = np.dstack([textured_image(6, 5, 1), np.full((6, 5), 77, np.uint8)])
    batch = batch_of({"good.png": good, "empty.jpg": b"", "junk.jpg": b"this is text",
                      "cut.png": good[: len(good) // 2], "alpha.png": encode(rgba, "PNG")})

    out = DecodeStage()(batch)

    assert list(out["id"]) == ["good.png", "empty.jpg", "junk.jpg", "cut.png", "alpha.png"]
    assert list(out["status"]) == ["", "failed", "failed", "failed", ""]
    assert out["error"][1] == "decode: empty file (0 bytes)"
    assert out["error"][2].startswith("decode: ImageDecodeError: cannot decode image")
    # The bytes are described, not Pillow's in-memory buffer ("<_io.BytesIO object at 0x…>").
    assert "BytesIO" not in out["error"][2] and "12 bytes starting 74 68 69 73" in out["error"][2]
    assert out["error"][3].startswith("decode: ImageDecodeError")
    assert out["image"][0].shape == (10, 12, 3) and (out["width"][0], out["height"][0]) == (12, 10)
    assert out["alpha"][0].size == 0 and np.all(out["alpha"][4] == 77)
    assert out["format"][4] == "PNG"


def test_mask_stage_reads_given_masks_and_sorts_rows_by_what_they_need(tmp_path):
    masks = tmp_path / "masks"
    write_mask(masks / "hole.png", hole_box(16, 16))
    write_mask(masks / "clean.png", np.zeros((16, 16), bool))
    write_mask(masks / "huge.png", np.ones((16, 16), bool))
    image = encode(textured_image(16, 16, 2))
    batch = DecodeStage()(batch_of({"hole.png": image, "clean.png": image, "huge.png": image, "nomask.png": image}))

    out = MaskStage("given", {"mask_dir": str(masks)}, {"max_hole_ratio": 0.5})(batch)

    assert list(out["status"]) == ["", "ok", "skipped", "failed"]
    assert np.array_equal(out["hole"][0], hole_box(16, 16)) and out["hole_ratio"][0] == pytest.approx(12 / 256)
    assert out["mask_method"][0] == "given" and '"method": "given"' in out["mask_details"][0]
    assert out["error"][2].startswith("mask: hole covers 100.0%")
    assert out["error"][3] == "mask: MaskGenerationError: no given mask for 'nomask.png'"


def test_inpaint_fills_only_the_hole_and_passes_other_rows_through(tmp_path):
    masks = tmp_path / "masks"
    write_mask(masks / "a.png", hole_box(32, 40))
    write_mask(masks / "b.png", hole_box(32, 40, (2, 2, 9, 9)))
    images = {"a.png": encode(textured_image(32, 40, 3)), "b.png": encode(textured_image(32, 40, 4)),
              "broken.png": b"\x89PNG broken"}
    batch = MaskStage("given", {"mask_dir": str(masks)})(DecodeStage()(batch_of(images)))

    out = InpaintStage(EngineConfig(name="opencv"))(batch)

    assert list(out["status"]) == ["ok", "ok", "failed"]
    for index in (0, 1):
        hole = out["hole"][index]
        assert np.array_equal(out["restored"][index][~hole], out["image"][index][~hole])
        assert not np.array_equal(out["restored"][index][hole], out["image"][index][hole])
    assert list(out["engine"][:2]) == ["opencv", "opencv"] and out["engine"][2] == ""
    assert list(out["precision"]) == ["uint8", "uint8", ""]
    assert list(out["seed"]) == [row_seed(0, name) for name in images]
    assert out["error"][2].startswith("decode:")  # untouched by the later stage


def test_a_row_the_engine_rejects_fails_alone():
    image = textured_image(12, 12, 5)
    batch = {"id": objects(["fine", "mismatched"]), "image": objects([image, image]),
             "hole": objects([hole_box(12, 12), hole_box(6, 6)])}

    out = InpaintStage(EngineConfig(name="opencv", batch_across_images=True))(batch)

    assert list(out["status"]) == ["ok", "failed"]
    assert "differs from its image" in out["error"][1]


def test_encode_keeps_the_input_format_alpha_and_writes_a_white_hole_png(tmp_path):
    rgba = np.dstack([textured_image(20, 24, 6), np.tile(np.arange(24, dtype=np.uint8) * 10, (20, 1))])
    images = {"photo.jpg": encode(textured_image(20, 24, 7), "JPEG"), "logo.png": encode(rgba, "PNG")}
    masks = tmp_path / "masks"
    for name in images:
        write_mask((masks / name).with_suffix(".png"), hole_box(20, 24))
    stages = [DecodeStage(), MaskStage("given", {"mask_dir": str(masks)}), InpaintStage(EngineConfig(name="opencv")),
              MetricsStage(), EncodeStage()]

    out = run_stages(batch_of(images), stages)

    assert set(out) >= {"image_bytes", "image_path", "mask", "seam_score"} and "restored" not in out
    jpeg, png = (Image.open(io.BytesIO(data)) for data in out["image_bytes"])
    assert (jpeg.format, jpeg.mode, png.format, png.mode) == ("JPEG", "RGB", "PNG", "RGBA")
    assert np.array_equal(np.asarray(png)[..., 3], rgba[..., 3])
    assert list(out["image_path"]) == ["photo.jpg", "logo.png"]
    mask = np.asarray(Image.open(io.BytesIO(out["mask"][0])))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask == 255, hole_box(20, 24))
    assert np.isfinite(out["seam_score"]).all()


@pytest.mark.parametrize("jpeg_tables", ["high", "source"])
def test_encode_quantises_reencoded_jpegs_as_asked(tmp_path, jpeg_tables):
    source = encode(textured_image(40, 48, 8), "JPEG", quality=70)
    write_mask(tmp_path / "masks" / "photo.png", hole_box(40, 48))
    stages = [DecodeStage(), MaskStage("given", {"mask_dir": str(tmp_path / "masks")}),
              InpaintStage(EngineConfig(name="opencv")), EncodeStage(jpeg_tables, jpeg="reencode")]

    out = run_stages(batch_of({"photo.jpg": source}), stages)

    assert (out["image_write"][0], out["image_write_note"][0]) == ("reencoded", "output.jpeg is reencode")

    tables = Image.open(io.BytesIO(out["image_bytes"][0])).quantization
    source_tables = Image.open(io.BytesIO(source)).quantization
    q95 = Image.open(io.BytesIO(encode(textured_image(40, 48, 8), "JPEG", quality=95))).quantization
    assert tables == (source_tables if jpeg_tables == "source" else q95)


@pytest.mark.timeout(120)
def test_stages_compose_in_a_users_own_ray_data_pipeline(ray_session, tmp_path):
    import ray.data

    images, masks = tmp_path / "images", tmp_path / "masks"
    make_image_folder(images, ["x.png", "y.png", "z.jpg"], masks=masks)
    (images / "w.png").write_bytes(b"not an image")

    # The README example: read with Ray, drop the stages into map_batches.
    dataset = ray.data.read_binary_files(str(images), include_paths=True)
    dataset = dataset.map_batches(RelativeIds(str(images)))  # given masks are looked up by relative path
    dataset = dataset.map_batches(DecodeStage())
    # Actors hold their CPUs for the whole run: on a 2-CPU machine they must leave room for the tasks.
    dataset = dataset.map_batches(MaskStage, fn_constructor_kwargs={"method": "given",
                                                                    "options": {"mask_dir": str(masks)}},
                                  compute=ray.data.ActorPoolStrategy(size=1), batch_size=4, num_cpus=0.25)
    dataset = dataset.map_batches(InpaintStage, fn_constructor_kwargs={"config": EngineConfig(name="opencv")},
                                  compute=ray.data.ActorPoolStrategy(size=1), batch_size=2, num_cpus=0.5)
    dataset = dataset.map_batches(EncodeStage())
    rows = {row["id"]: row for row in dataset.take_all()}

    assert set(rows) == {"w.png", "x.png", "y.png", "z.jpg"}
    assert {rows[name]["status"] for name in ("x.png", "y.png", "z.jpg")} == {"ok"}
    assert rows["w.png"]["status"] == "failed" and rows["w.png"]["image_bytes"] is None
    assert Image.open(io.BytesIO(rows["z.jpg"]["image_bytes"])).format == "JPEG"


class RelativeIds:
    """Ids relative to the image folder from read_binary_files' absolute paths (the given masks' keys)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/") + "/"

    def __call__(self, batch):
        batch["id"] = objects([str(path).removeprefix(self.root) for path in batch["path"]])
        return batch


def test_an_opencv_only_worker_never_imports_torch(tmp_path):
    """CPU actors of an OpenCV job skip torch's ~1.5 s / ~300 MB import (checked in a fresh interpreter)."""
    write_mask(tmp_path / "a.png", hole_box(24, 32, (4, 4, 10, 12)))
    script = f"""
import sys
import numpy as np
from pipeline.stages import DecodeStage, EncodeStage, InpaintStage, MaskStage, MetricsStage, run_stages
from pipeline.stages import objects
from pipeline.config import EngineConfig
import matcore
from matcore import ClassicalInpainter
png = {encode(textured_image(24, 32, 0), "PNG")!r}
stages = [DecodeStage(), MaskStage("given", {{"mask_dir": {str(tmp_path)!r}}}), InpaintStage(EngineConfig(name="opencv")),
          MetricsStage(), EncodeStage()]
out = run_stages({{"bytes": objects([png]), "path": objects(["a.png"])}}, stages)
assert list(out["status"]) == ["ok"], out["error"]
print("torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_inpaint_stage_passes_its_engine_config_whole_and_records_the_precision(monkeypatch):
    """The stage builds its engine through matcore.build with the config's device, precision and options,
    and honours the precision on CPU (it used to force float32 there); rows record what the engine ran in."""
    import matcore.build
    from matcore.build import EngineKind, MatOptions
    from matcore.classical import ClassicalInpainter
    from matcore.engine import EngineInfo
    from matcore.pinned import CheckpointRef

    built = {}

    class StandIn(ClassicalInpainter):  # MAT's interface, OpenCV's cost
        @property
        def info(self):
            return EngineInfo("mat", "stand-in", built["device"], built["precision"])

    def build(options, *, checkpoint, device, precision, cache_dir):
        built.update(options=options, checkpoint=checkpoint, device=device, precision=precision, cache_dir=cache_dir)
        return StandIn()

    monkeypatch.setitem(matcore.build.engine_registry, "mat", EngineKind(build, MatOptions, needs_checkpoint=True))
    ref = CheckpointRef("https://example.org/mat.pkl", "a" * 64)
    config = EngineConfig(name="mat", device="cpu", dtype="bfloat16", options={"batch_size": 2}, cache_dir="/c")
    stage = InpaintStage(config, ref)
    assert built == {"options": MatOptions(batch_size=2), "checkpoint": ref, "device": "cpu",
                     "precision": "bfloat16", "cache_dir": "/c"}

    image = textured_image(12, 12, 5)
    out = stage({"id": objects(["a", "b"]), "image": objects([image, image]),
                 "hole": objects([hole_box(12, 12), np.zeros((12, 12), bool)])})
    assert list(out["status"]) == ["ok", ""] and list(out["precision"]) == ["bfloat16", ""]
    assert list(out["engine"]) == ["mat", ""] and out["checkpoint_sha256"][0] == "a" * 64
