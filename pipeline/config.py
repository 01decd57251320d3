"""The job configuration: one typed `JobConfig` made of one frozen dataclass per concern.

A config is built from a plain mapping (YAML/JSON file, CLI flags, Prefect parameters) and validated
completely before any work starts, so a typo fails in a second with the dotted path of the bad field
instead of an hour into a job. Its canonical JSON and sha256 are saved with the output; the hash of the
parts that change what is written decides whether a rerun may resume an existing output.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from matcore.build import describe_hint

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MASK_METHODS = ("given", "text", "consistent", "sam")
ENGINES = ("auto", "mat", "opencv")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the field (dotted path) and what is expected."""


def _fail(path: str, message: str) -> None:
    raise ConfigError(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class InputConfig:
    """What to read.

    Attributes:
        uris: image folders, Parquet files or folders of Parquet files; local paths or URIs
            (`file://`, `s3://`, `gs://`, any fsspec protocol such as `memory://`).
        format: "auto" tells folders of images from Parquet by their content; "images"/"parquet" force it.
        image_column: Parquet column holding the image: encoded bytes, the Hugging Face Image struct
            `{bytes, path}`, or a path (string). None = auto-detect (Image-typed or struct column,
            then a column named "image", then the first binary column).
        id_column: Parquet column with a stable row id. None = the path column's value when images are
            referenced by path, else "<parquet file>#<row>".
        reference_column: Parquet column with a clean reference image (bytes or struct); enables PSNR/SSIM.
        extensions: file suffixes listed in image folders (case-insensitive).
        on_duplicate: "skip" keeps a later row with an already-listed id or source as a `skipped` output
            row (its id suffixed `#dupN` so output ids stay unique); "error" refuses the job.
        allow_external_paths: let a Parquet path column point outside the Parquet file's folder
            (absolute paths, `..`). Off by default: a hostile dataset must not make the job read
            arbitrary files of the machine.
        max_pixels: images with more pixels fail as possible decompression bombs (None = the
            decoder's default, Pillow's limit of about 89 megapixels).
    """

    uris: tuple[str, ...] = ()
    format: Literal["auto", "images", "parquet"] = "auto"
    image_column: str | None = None
    id_column: str | None = None
    reference_column: str | None = None
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    on_duplicate: Literal["skip", "error"] = "skip"
    allow_external_paths: bool = False
    max_pixels: int | None = None

    def validate(self, path: str) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            _fail(f"{path}.max_pixels", f"must be >= 1, got {self.max_pixels}")
        if not self.uris:
            _fail(f"{path}.uris", "at least one input URI is required")
        for index, uri in enumerate(self.uris):
            if not uri.strip():
                _fail(f"{path}.uris[{index}]", "empty URI")
        for index, suffix in enumerate(self.extensions):
            if not suffix.startswith("."):
                _fail(f"{path}.extensions[{index}]", f"a suffix starts with '.', got {suffix!r}")


@dataclass(frozen=True)
class MaskConfig:
    """How hole masks are made.

    Attributes:
        method: "given" (mask files or a Parquet column), "text" (OCR text detector), "consistent"
            (a watermark repeated across the dataset; fitted once per job) or "sam" (Segment Anything).
        options: the generator's own settings (e.g. given: `mask_dir`, `suffix`, `hole_value`;
            text: `position`, `min_score`), checked by the generator's config class.
        postprocess: shared clean-up (`dilate_px`, `dilate_percent`, `min_component_area`,
            `max_hole_ratio`); a row whose hole exceeds `max_hole_ratio` is `skipped`, not inpainted.
        fit_sample_size: images the consistent generator sees when it is fitted (spread evenly
            over the listing, so the sample is the same on every run).
    """

    method: Literal["given", "text", "consistent", "sam"] = "text"
    options: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    fit_sample_size: int = 200

    def validate(self, path: str) -> None:
        if self.fit_sample_size < 2:
            _fail(f"{path}.fit_sample_size", f"must be >= 2, got {self.fit_sample_size}")
        # The generators own their settings: let their config classes judge them, here, up front.
        from pipeline.masks import PostprocessConfig, config_from_mapping, make_config

        try:
            make_config(self.method, self.options)
        except ImportError as exc:
            _fail(f"{path}.method", f"mask method {self.method!r} is not available here ({exc})")
        except (TypeError, ValueError) as exc:
            _fail(f"{path}.options", str(exc))
        try:
            config_from_mapping(PostprocessConfig, self.postprocess)
        except (TypeError, ValueError) as exc:
            _fail(f"{path}.postprocess", str(exc))


@dataclass(frozen=True)
class EngineConfig:
    """Which inpainting engine fills the holes (built by matcore.build on every inpainting actor).

    Attributes:
        name: "mat" (the MAT network), "opencv" (classical, no weights), or "auto": MAT when the
            checkpoint resolves, else OpenCV with a loud warning in the log and the job report.
        checkpoint: a known registry name (see `matpipe weights list`), a path, or a URI (`file://`,
            `http(s)://`, `s3://`, `gs://`, any fsspec URL). The driver pins it to its sha256 once; each
            node fetches it into its own cache and refuses a copy with another sha256.
        checkpoint_sha256: the checkpoint's sha256, when known: the driver then pins a remote checkpoint
            without downloading it (each node still checks its copy against it).
        cache_dir: where checkpoints are cached on every node (None = each node's default:
            `$MATPIPE_CACHE_DIR`, else `~/.cache/matpipe/checkpoints`).
        device: "auto" = CUDA when the actor was given a GPU, else CPU.
        dtype: compute precision of MAT, honoured on every device; "auto" = bfloat16 on CUDA and on CPUs
            that compute bf16 natively (avx512_bf16 / AMX), float32 elsewhere (see matcore.precision).
            The precision actually used is recorded in each row's `precision` column.
        seed: base seed; each row's seed is derived from it and the row id, so a row's result does not
            depend on its shard, batch or rerun.
        options: the engine's own settings, validated up front (matcore.build: MAT `strategy`,
            `context`, `margin`, `batch_size`, `truncation_psi`; OpenCV `method`, `radius`). Under
            "auto" they are MAT's; an OpenCV fallback runs with OpenCV's defaults.
        batch_across_images: let one model forward mix the windows of the images of one group (see
            `execution.batch_size.inpaint`; much faster on GPUs). Batched kernels round with the batch's
            make-up, and the job makes that a function of the shard, so a resumed or retried shard is
            still byte-identical. Off: one image per call.
        invert: "auto" recovers the pixels under an alpha-blended watermark found by `consistent`
            masks by inverting its blend (matte and colour estimated from the dataset at fit time) and
            inpaints only what cannot be recovered; "off" inpaints the whole hole.
        invert_options: settings of the inversion (pipeline.watermark.invert.InversionConfig, e.g.
            `alpha_max`, `smoothness`).
    """

    name: Literal["auto", "mat", "opencv"] = "auto"
    checkpoint: str = "places512"
    checkpoint_sha256: str | None = None
    cache_dir: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    batch_across_images: bool = True
    invert: Literal["auto", "off"] = "auto"
    invert_options: dict[str, Any] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        from matcore.build import EngineOptionError, engine_options

        from pipeline.watermark.restore import inversion_config

        try:
            inversion_config(self.invert_options)
        except (TypeError, ValueError) as exc:
            _fail(f"{path}.invert_options", str(exc))
        if self.name != "opencv" and not self.checkpoint.strip():
            _fail(f"{path}.checkpoint", "a checkpoint registry name, path or URI is required for MAT")
        if self.checkpoint_sha256 is not None and not (
                len(self.checkpoint_sha256) == 64 and all(c in "0123456789abcdef" for c in self.checkpoint_sha256.lower())):
            _fail(f"{path}.checkpoint_sha256", f"expected 64 hexadecimal digits, got {self.checkpoint_sha256!r}")
        if self.seed < 0:
            _fail(f"{path}.seed", f"must be >= 0, got {self.seed}")
        try:
            engine_options(self.options_engine, self.options)
        except EngineOptionError as exc:
            _fail(f"{path}.options.{exc.option}" if exc.option else f"{path}.options", exc.reason)

    @property
    def options_engine(self) -> str:
        """The engine whose options `options` are ("auto" means MAT's)."""
        return "mat" if self.name == "auto" else self.name


@dataclass(frozen=True)
class MetricsConfig:
    """Per-row quality figures.

    Attributes:
        enabled: compute metrics at all (they cost about as much as decoding).
        ring_px: width of the ring of context around the hole that the fill is compared with.
        rerun_mask: run the mask generator again on the restored image to catch what is still
            detected; "auto" does it for detectors (text, consistent) and not for given/sam masks,
            which would only return the same mask.
    """

    enabled: bool = True
    ring_px: int = 12
    rerun_mask: Literal["auto", "on", "off"] = "auto"

    def validate(self, path: str) -> None:
        if not 1 <= self.ring_px <= 256:
            _fail(f"{path}.ring_px", f"must be in [1, 256], got {self.ring_px}")


@dataclass(frozen=True)
class BatchSizes:
    """Rows per batch handed to each stage; the inpainting batch is what the model sees at once."""

    decode: int = 8
    mask: int = 8
    inpaint: int = 4
    metrics: int = 8
    encode: int = 8

    def validate(self, path: str) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not 1 <= value <= 4096:
                _fail(f"{path}.{item.name}", f"must be in [1, 4096], got {value}")


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how the job runs. None of this changes the output, except `shard_size`.

    Attributes:
        ray_address: None starts a local Ray sized to the machine; "auto" or "ray://host:10001" joins a
            cluster. When Ray is already initialised in this process it is used as is.
        num_cpus: CPUs of the local Ray (None = all).
        shard_size: rows per shard, the unit of commit and resume.
        shards_per_pipeline: no longer used: every pending shard of a run streams through one Ray Data
            pipeline, so actor pools and models are set up once per run (kept so older configs load).
        num_gpus_per_worker: GPUs per inpainting actor; None = 1 where the cluster has GPUs, else 0.
        inpaint_actors: inpainting actors; None = one per GPU, or 1 on a CPU-only cluster.
        inpaint_num_cpus: logical CPUs Ray reserves per inpainting actor; None = 1 for MAT (the model is
            the bottleneck), 0.25 for OpenCV (fast: the CPUs are better left to decoding and encoding).
        inpaint_threads: torch/OpenCV threads per inpainting actor; None = the node's CPUs / actors.
        mask_actors / mask_num_cpus: the mask generator pool; None = autoscaling from 1 actor up to a
            quarter of the cluster's CPUs (a number fixes the pool's size).
        metrics_actors / metrics_num_cpus: the metrics pool (when it re-runs a detector), sized the same way.
        task_num_cpus: logical CPUs per decode/encode task (one: those tasks are single-threaded; a
            fraction would run more tasks, and start more worker processes, than a node has cores).
        task_concurrency: decode tasks, and encode tasks, running at once across the cluster (None = as
            many as the CPUs left by the actor pools fit). Each runs in a Ray worker process that costs
            seconds of CPU to start and some hundred MB to keep: on nodes with many more cores than the
            decoding needs, a cap starts fewer processes beside the models and holds less memory; too
            low a cap starves the GPUs when decoding is heavy (large photos).
        batch_size: `inpaint` is the job's group: consecutive rows of one shard that travel together through
            every stage and share one model batch (so the batch's make-up is a function of the shard);
            the other sizes apply to the stages used on their own, not to the job.
        max_restarts: times Ray restarts a dead actor (OOM, segfault, lost node).
        max_task_retries: times a batch is retried on a restarted actor; also the decode/encode task
            retries.
        object_store_memory: bytes of object store Ray Data may fill with in-flight batches (None = its
            default share); lower it to tighten backpressure.
        preserve_order: groups finish in listing order (shards then commit in order) at the price of
            head-of-line blocking. Shard files are deterministic either way: each group has its own part.
    """

    ray_address: str | None = None
    num_cpus: int | None = None
    shard_size: int = 1000
    shards_per_pipeline: int = 16
    num_gpus_per_worker: float | None = None
    inpaint_actors: int | None = None
    inpaint_num_cpus: float | None = None
    inpaint_threads: int | None = None
    mask_actors: int | None = None
    mask_num_cpus: float = 0.25
    metrics_actors: int | None = None
    metrics_num_cpus: float = 0.25
    task_num_cpus: float = 1.0
    task_concurrency: int | None = None
    batch_size: BatchSizes = field(default_factory=BatchSizes)
    max_restarts: int = 3
    max_task_retries: int = 3
    object_store_memory: int | None = None
    preserve_order: bool = False

    def validate(self, path: str) -> None:
        if self.ray_address is not None and not (
            self.ray_address == "auto" or "://" in self.ray_address or ":" in self.ray_address
        ):
            _fail(f"{path}.ray_address", f"expected 'auto', 'ray://host:port' or 'host:port', got {self.ray_address!r}")
        positive = {
            "shard_size": self.shard_size, "shards_per_pipeline": self.shards_per_pipeline,
        }
        optional_positive = {
            "num_cpus": self.num_cpus, "inpaint_actors": self.inpaint_actors,
            "inpaint_threads": self.inpaint_threads, "object_store_memory": self.object_store_memory,
            "mask_actors": self.mask_actors, "metrics_actors": self.metrics_actors,
            "task_concurrency": self.task_concurrency,
        }
        for name, value in {**positive, **{k: v for k, v in optional_positive.items() if v is not None}}.items():
            if value < 1:
                _fail(f"{path}.{name}", f"must be >= 1, got {value}")
        for name in ("inpaint_num_cpus", "mask_num_cpus", "metrics_num_cpus", "task_num_cpus"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1024:
                _fail(f"{path}.{name}", f"must be > 0, got {value}")
        if self.num_gpus_per_worker is not None and self.num_gpus_per_worker < 0:
            _fail(f"{path}.num_gpus_per_worker", f"must be >= 0, got {self.num_gpus_per_worker}")
        for name in ("max_restarts", "max_task_retries"):
            if getattr(self, name) < -1:
                _fail(f"{path}.{name}", f"must be >= -1 (-1 = forever), got {getattr(self, name)}")
        self.batch_size.validate(f"{path}.batch_size")


@dataclass(frozen=True)
class OutputConfig:
    """Where and what to write.

    Attributes:
        uri: output root (local path or URI). Shards go to `data/`, markers to `_shards/`, job files to
            `_job/`, image files (when `write_images`) to `images/`.
        write_images: also write each output image as a file mirroring the input tree, in the input's
            format.
        compression: Parquet compression codec. Image bytes are already compressed, so the default
            only squeezes the other columns.
        row_group_size: rows per Parquet row group (the Hugging Face viewer likes ~100 for images).
        jpeg_tables: how restored JPEGs are quantised: "high" = quality 95, or the source's own table
            entries where those are finer (never coarser than either); "source" = the source's own
            tables (file sizes stay put and unchanged areas lose nothing more; the filled hole is
            compressed like the rest of the source). Used where JPEGs are re-encoded (see `jpeg`).
        jpeg: how restored JPEGs are written: "splice" = the source's own compressed blocks are kept and
            only the blocks of the changed pixels are re-coded with the source's tables (pipeline.jpeg:
            bit-identical outside the touched MCUs, same file size), re-encoding only where that is
            impossible; "reencode" = the whole image is re-encoded (`jpeg_tables`). The row's
            `image_write` / `image_write_note` say which way each image was written and why.
    """

    uri: str = ""
    write_images: bool = False
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    row_group_size: int = 100
    jpeg_tables: Literal["high", "source"] = "high"
    jpeg: Literal["splice", "reencode"] = "splice"

    def validate(self, path: str) -> None:
        if not self.uri.strip():
            _fail(f"{path}.uri", "an output URI is required")
        if not 1 <= self.row_group_size <= 1_000_000:
            _fail(f"{path}.row_group_size", f"must be in [1, 1000000], got {self.row_group_size}")


# Sections whose values change what is written: they make up the config hash that guards resumes.
# Of `execution` only the shard size matters (it fixes the shard plan).
CONTENT_SECTIONS = ("inputs", "masks", "engine", "metrics", "output")


@dataclass(frozen=True)
class JobConfig:
    """Everything a dataset job needs; build it with `from_mapping`/`from_file`, or directly."""

    inputs: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every section; raises ConfigError naming the first bad field."""
        for name, section_type in _section_types().items():
            section = getattr(self, name)
            if not isinstance(section, section_type):
                _fail(name, f"expected a {section_type.__name__}, got {type(section).__name__}")
            section.validate(name)

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> JobConfig:
        """Build from nested plain data (what YAML/JSON give); unknown keys and wrong types are errors."""
        return _build(cls, data, "")

    @classmethod
    def from_file(cls, path: str | Path) -> JobConfig:
        """Load a `.yaml`/`.yml`/`.json` file (YAML is a superset of JSON, so either parses)."""
        import yaml

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML/JSON: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
        try:
            return cls.from_mapping(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self, **sections: Any) -> JobConfig:
        """A copy with whole sections replaced, or with fields of a section updated from a mapping.

        `config.replace(engine={"name": "opencv"})` keeps the other engine fields.
        """
        updated: dict[str, Any] = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if isinstance(value, Mapping):
                merged = {**to_plain(current), **value}
                updated[name] = _build(type(current), merged, name)
            else:
                updated[name] = value
        return dataclasses.replace(self, **updated)

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data that `from_mapping` turns back into an equal config."""
        return to_plain(self)

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace: equal configs give equal text."""
        return canonical_json(self.to_dict())

    def content_dict(self) -> dict[str, Any]:
        """The parts that change the output (see CONTENT_SECTIONS) plus the shard size."""
        data = self.to_dict()
        content = {name: data[name] for name in CONTENT_SECTIONS}
        content["execution"] = {"shard_size": self.execution.shard_size}
        return content

    def content_hash(self, extra: Mapping[str, Any] | None = None) -> str:
        """sha256 of the canonical content; `extra` adds resolved facts (engine actually used, weights)."""
        content = self.content_dict()
        if extra:
            content["resolved"] = dict(extra)
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()


def _section_types() -> dict[str, type]:
    return {
        "inputs": InputConfig, "output": OutputConfig, "masks": MaskConfig, "engine": EngineConfig,
        "metrics": MetricsConfig, "execution": ExecutionConfig,
    }


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace, for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_plain(value: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, recursively (JSON-ready)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: to_plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------------
# Typed construction from plain data. Small on purpose: the config types use only str/int/float/bool,
# Literal, Optional, tuple[str, ...], dict[str, Any] and nested dataclasses.


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            _fail(path, f"must not be null (expected {describe_hint(hint)})")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        _fail(path, f"expected {describe_hint(hint)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(hint):
            _fail(path, f"expected {describe_hint(hint)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            _fail(path, f"expected a list, got {value!r}")
        (item_hint, _ellipsis) = get_args(hint)
        return tuple(_convert(item_hint, item, f"{path}[{index}]") for index, item in enumerate(value))
    if origin is dict:
        if value is None:  # `options:` with every entry below it commented out, as in the example config
            return {}
        if not isinstance(value, Mapping):
            _fail(path, f"expected a mapping, got {value!r}")
        return {str(key): item for key, item in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if value is None:  # a section (`engine:`) whose fields are all commented out: its defaults
            return _build(hint, {}, path)
        return _build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            _fail(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            _fail(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, Path):
            return str(value)
        if not isinstance(value, str):
            _fail(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config field {path} has an unsupported type {hint!r}")  # a bug in this module


_T = typing.TypeVar("_T")


def _build(cls: type[_T], data: Any, path: str) -> _T:
    if not isinstance(data, Mapping):
        _fail(path, f"expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {item.name for item in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        where = f"{path}." if path else ""
        _fail(path, f"unknown key(s) {', '.join(where + str(k) for k in unknown)} (valid: {', '.join(sorted(fields))})")
    values = {name: _convert(hints[name], value, f"{path}.{name}" if path else name) for name, value in data.items()}
    if cls is JobConfig:
        return cls(**values)  # JobConfig validates itself, with full dotted paths
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
