"""Building inpainting engines by name: one registry, one builder per engine, typed options.

    engine = build_engine("mat", {"batch_size": 8}, checkpoint=ref, device="auto", precision="auto")
    engine = build_engine("opencv", {"method": "ns"})

`engine_registry` maps each engine name to its builder and its options type (like segment-anything's
`sam_model_registry`); the dataset job, the CLI and the pipeline stages all build engines here, so
adding an engine is one entry. `choose_engine` implements the "auto" engine name (MAT when its
checkpoint resolves, else OpenCV with a warning) for everyone who offers it.

Options are validated before anything is built (`engine_options`): an unknown name or a bad value
raises EngineOptionError naming the option. Torch is imported only by the MAT builder.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from matcore.engine import InpaintEngine
from matcore.pinned import CheckpointRef, fetch_checkpoint, pin_checkpoint
from matcore.registry import CheckpointUnavailableError, ChecksumMismatchError

class EngineOptionError(ValueError):
    """An engine option is unknown or has a bad value; `option` names it (None: the options as a whole)."""

    def __init__(self, option: str | None, message: str) -> None:
        super().__init__(f"{option}: {message}" if option else message)
        self.option = option
        self.reason = message


@dataclass(frozen=True)
class MatOptions:
    """Settings of the MAT engine (matcore.Inpainter).

    Attributes:
        strategy: windows around holes: "crop", "resize" (the whole image in one window) or "auto".
        context: a window's side is at least this × the larger side of the hole group it serves (>= 1).
        margin: known ring kept around a hole group in model pixels (None = resolution // 8).
        batch_size: windows per generator forward.
        truncation_psi: style truncation of the mapping network (1.0 = none, the official default).
    """

    strategy: Literal["auto", "crop", "resize"] = "auto"
    context: float = 1.5
    margin: int | None = None
    batch_size: int = 4
    truncation_psi: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.context) and self.context >= 1.0):
            raise EngineOptionError("context", f"must be a finite number >= 1, got {self.context}")
        if self.margin is not None and not 0 <= self.margin < 128:
            raise EngineOptionError("margin", f"must be in [0, 128) model pixels, got {self.margin}")
        if not 1 <= self.batch_size <= 1024:
            raise EngineOptionError("batch_size", f"must be in [1, 1024], got {self.batch_size}")
        if not (math.isfinite(self.truncation_psi) and 0.0 <= self.truncation_psi <= 1.0):
            raise EngineOptionError("truncation_psi", f"must be in [0, 1], got {self.truncation_psi}")


@dataclass(frozen=True)
class OpenCVOptions:
    """Settings of the classical engine (matcore.ClassicalInpainter).

    Attributes:
        method: "telea" (fast marching) or "ns" (Navier-Stokes).
        radius: neighbourhood radius in pixels each filled pixel draws from.
    """

    method: Literal["telea", "ns"] = "telea"
    radius: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.radius <= 100:
            raise EngineOptionError("radius", f"must be in [1, 100], got {self.radius}")


def build_mat(options: MatOptions, *, checkpoint: CheckpointRef | str | os.PathLike[str] | None,
              device: str = "auto", precision: str = "auto",
              cache_dir: str | os.PathLike[str] | None = None) -> InpaintEngine:
    """The MAT engine: the pinned checkpoint fetched into this machine's cache, on `device`, in `precision`
    ("auto": see matcore.precision)."""
    from matcore.inpainter import Inpainter
    from matcore.loading import load_generator
    from matcore.precision import resolve_device, resolve_precision

    if checkpoint is None:
        raise ValueError("the MAT engine needs a checkpoint")
    torch_device = resolve_device(device)
    path = (fetch_checkpoint(checkpoint, cache_dir) if isinstance(checkpoint, CheckpointRef)
            else fetch_checkpoint(pin_checkpoint(checkpoint, cache_dir=cache_dir), cache_dir))
    generator = load_generator(path, torch_device)
    return Inpainter(generator, device=torch_device, dtype=resolve_precision(precision, torch_device),
                     **dataclasses.asdict(options))


def build_opencv(options: OpenCVOptions, **_ignored: Any) -> InpaintEngine:
    """The classical engine; it needs no checkpoint and runs on the CPU in uint8 whatever is asked."""
    from matcore.classical import ClassicalInpainter

    return ClassicalInpainter(method=options.method, radius=options.radius)


@dataclass(frozen=True)
class EngineKind:
    """One registry entry: how to build the engine, the type of its options, whether it needs weights."""

    build: Callable[..., InpaintEngine]
    options: type
    needs_checkpoint: bool


engine_registry: dict[str, EngineKind] = {
    "mat": EngineKind(build_mat, MatOptions, needs_checkpoint=True),
    "opencv": EngineKind(build_opencv, OpenCVOptions, needs_checkpoint=False),
}


def _kind(name: str) -> EngineKind:
    try:
        return engine_registry[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r} (known: {', '.join(engine_registry)})") from None


def engine_options(name: str, options: Mapping[str, Any] | Any | None = None) -> Any:
    """The engine's typed options from a plain mapping (or an instance, returned as is).

    Raises EngineOptionError naming the first unknown or bad option.
    """
    options_type = _kind(name).options
    if isinstance(options, options_type):
        return options
    options = dict(options or {})
    fields = {item.name for item in dataclasses.fields(options_type)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise EngineOptionError(unknown[0], f"unknown option for engine {name!r} (valid: {', '.join(sorted(fields))})")
    hints = get_type_hints(options_type)
    values = {key: _typed(key, hints[key], value) for key, value in options.items()}
    return options_type(**values)


def _typed(option: str, hint: Any, value: Any) -> Any:
    """`value` checked against the option's type (int, float, str, Literal, Optional); ints pass as floats."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [arg for arg in get_args(hint) if arg is not type(None)]
        if value is None and len(args) < len(get_args(hint)):
            return None
        for arg in args:
            with contextlib.suppress(EngineOptionError):
                return _typed(option, arg, value)
        raise EngineOptionError(option, f"expected {describe_hint(hint)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(hint):
            raise EngineOptionError(option, f"expected {describe_hint(hint)}, got {value!r}")
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise EngineOptionError(option, f"expected {describe_hint(hint)}, got {value!r}")


def describe_hint(hint: Any) -> str:
    """A type hint in the words of a configuration file's author ("'auto' or 'crop'", "a number")."""
    origin = get_origin(hint)
    if origin is Literal:
        return " or ".join(repr(v) for v in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(describe_hint(arg) for arg in get_args(hint))
    if hint is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    return "a number" if hint is float else getattr(hint, "__name__", str(hint))


def build_engine(name: str, options: Mapping[str, Any] | Any | None = None, *,
                 checkpoint: CheckpointRef | str | os.PathLike[str] | None = None, device: str = "auto",
                 precision: str = "auto", cache_dir: str | os.PathLike[str] | None = None) -> InpaintEngine:
    """The engine `name` with `options` (a mapping or its options type), ready to inpaint.

    `checkpoint` (a pinned CheckpointRef, or a name/path/URI pinned here) is fetched into this machine's
    cache (`cache_dir`, else matcore.registry's default) and verified. `device` "auto" = CUDA when this
    process sees a GPU; `precision` "auto" = matcore.precision's choice for that device.
    """
    kind = _kind(name)
    typed = engine_options(name, options)
    return kind.build(typed, checkpoint=checkpoint, device=device, precision=precision, cache_dir=cache_dir)


# ------------------------------------------------------------------------------------------------ "auto"


@dataclass(frozen=True)
class EngineChoice:
    """The engine to build, as the driver decided it.

    Attributes:
        name: a key of `engine_registry`.
        checkpoint: the pinned checkpoint (MAT), else None.
        fallback_reason: why "auto" could not use MAT (then `name` is "opencv"), else None.
    """

    name: str
    checkpoint: CheckpointRef | None = None
    fallback_reason: str | None = None

    @property
    def warning(self) -> str | None:
        """What to tell the user, loudly, when "auto" fell back to OpenCV."""
        if self.fallback_reason is None:
            return None
        return ("NO MAT CHECKPOINT: using the classical OpenCV engine instead of MAT; large holes will look "
                f"smeared. {self.fallback_reason}")


def choose_engine(name: str, checkpoint: str | os.PathLike[str] | None, *,
                  cache_dir: str | os.PathLike[str] | None = None, checkpoint_sha256: str | None = None,
                  allow_fallback: bool = True) -> EngineChoice:
    """Resolve "auto" / "mat" / "opencv" on the driver, pinning MAT's checkpoint (hashed once here).

    "auto" is MAT when the checkpoint resolves, else OpenCV with a warning (when `allow_fallback`; a
    checkpoint the user named explicitly should not fall back). Raises CheckpointUnavailableError when
    an engine that needs a checkpoint cannot have it.
    """
    if name != "auto" and not _kind(name).needs_checkpoint:
        return EngineChoice(name)
    if checkpoint is None or not str(checkpoint).strip():
        raise CheckpointUnavailableError("the MAT engine needs a checkpoint (a registry name, path or URI)")
    try:
        ref = pin_checkpoint(str(checkpoint), cache_dir=cache_dir, sha256=checkpoint_sha256)
    except CheckpointUnavailableError as exc:
        # A file that is there but wrong is an error to fix, never a reason to quietly use another engine.
        if name != "auto" or not allow_fallback or isinstance(exc, ChecksumMismatchError):
            raise
        return EngineChoice("opencv", fallback_reason=str(exc))
    return EngineChoice("mat" if name == "auto" else name, ref)

