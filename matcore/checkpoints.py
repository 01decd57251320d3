"""Read MAT checkpoints without running code from them, and convert them to safetensors.

The published MAT weights are StyleGAN2-ADA "persistent" pickles: loading them the official way imports
and EXECUTES Python source embedded in the file. We read them with a restricted unpickler instead: an
explicit allow-list of globals, persistent objects turned into inert records, and a walk over the
records' module state that rebuilds the flat `state_dict()` of each network. Plain torch state dicts go
through `torch.load(weights_only=True)`, and safetensors (our canonical format) hold tensors only.

Every reader returns ``{network name: {parameter name: tensor}}`` with tensors exactly as stored (dtype
kept, CPU). Formats are told apart by content, not by file extension.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import pickle
import re
import sys
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
CheckpointFormat = Literal["official-pickle", "torch-zip", "torch-legacy", "safetensors"]

# Networks of a training snapshot, in the order callers want them (the EMA generator is the one to use).
NETWORK_NAMES = ("G_ema", "G", "D")
# Our safetensors files hold one network, named by their `network` metadata (`G_ema` when absent), and
# say which layout they follow in `format_version`.
SAFETENSORS_FORMAT_VERSION = "1"

_ZIP_MAGIC = b"PK\x03\x04"
# `torch.save(..., _use_new_zipfile_serialization=False)` starts with this pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_CHUNK = 1 << 20
_MAX_MODULE_DEPTH = 64  # MAT nests about 10 deep; deeper means a malformed or cyclic pickle


class UnsafeCheckpointError(ValueError):
    """The checkpoint asks to load something a weights file never needs (code, arbitrary classes)."""


# --------------------------------------------------------------------------------------------------
# Hashing


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks so multi-GB checkpoints do not have to fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Format detection


def detect_format(path: str | os.PathLike[str]) -> CheckpointFormat:
    """Tell the checkpoint format from the file's first bytes; extensions are often wrong (`.pth` pickles).

    Raises ValueError (naming the file) for empty files and unknown content.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        raise ValueError(f"{path}: file is empty (0 bytes); the download or copy probably failed")
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = int.from_bytes(head[:8], "little")
        if 8 + header_len <= size:
            return "safetensors"
        raise ValueError(f"{path}: truncated safetensors file (header says {header_len} bytes, file has {size})")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "official-pickle"
    raise ValueError(
        f"{path}: not a checkpoint this tool reads (expected a MAT .pkl, a torch .pth/.pt/.ckpt or a .safetensors file)"
    )


# --------------------------------------------------------------------------------------------------
# Restricted unpickling of StyleGAN2-ADA persistent pickles


@dataclass
class PersistentObjectRecord:
    """Inert stand-in for an object the official code would rebuild by executing its embedded module source.

    Only the class name, a fingerprint of the source and the object's `__dict__` are kept.
    """

    class_name: str
    state: dict[str, Any]
    module_src_sha256: str | None = None


class TorchModuleRecord:
    """Inert stand-in for a stock `torch.nn` module (ModuleList, Sequential, Softmax, ...) inside a network.

    The real class is never instantiated: the unpickler hands out a subclass of this one named after it,
    and the pickle's BUILD step just stores the module `__dict__` in `state`.
    """

    class_name: ClassVar[str] = "torch.nn.Module"

    def __init__(self, *_args: Any) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        # Objects with __slots__ pickle their state as (dict_state, slot_state).
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if not isinstance(state, dict):
            raise ValueError(f"{self.class_name}: module state is a {type(state).__name__}, expected a dict")
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.class_name} record>"


def _reconstruct_persistent_obj(meta: Any) -> PersistentObjectRecord:
    """Replacement for `torch_utils.persistence._reconstruct_persistent_obj` that keeps the data, not the code."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise ValueError("persistent object without the expected {'type': 'class', 'state': {...}} metadata")
    source = meta.get("module_src")
    return PersistentObjectRecord(
        class_name=str(meta.get("class_name", "?")),
        state=meta["state"],
        module_src_sha256=hashlib.sha256(source.encode()).hexdigest() if isinstance(source, str) else None,
    )


def _load_storage_from_bytes(payload: Any) -> torch.TypedStorage | torch.UntypedStorage:
    """Replacement for `torch.storage._load_from_bytes`, whose original runs a full (unsafe) `torch.load`."""
    if not isinstance(payload, (bytes, bytearray)):
        raise ValueError("tensor storage payload is not bytes")
    try:
        storage = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"tensor storage payload refused by torch's weights-only loader: {exc}") from exc
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise ValueError(f"tensor storage payload holds a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """Replacement for `torch._utils._rebuild_tensor_v2`: a plain tensor over the storage, bounds-checked.

    The ignored trailing arguments are `requires_grad`, backward hooks and metadata, none of which a
    state dict needs. The bounds check matters: `Tensor.set_` silently grows a storage that is too
    small, so a hostile size would allocate memory and expose uninitialised values.
    """
    if not isinstance(storage, torch.TypedStorage):
        raise ValueError(f"tensor built over a {type(storage).__name__}, expected a typed storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise ValueError("tensor size/stride are not matching tuples")
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)):
        raise ValueError("tensor offset, size and stride must be non-negative integers")
    untyped = storage._untyped_storage
    available = untyped.nbytes() // torch.empty((), dtype=storage.dtype).element_size()
    if all(size):
        needed = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
        if needed > available:
            raise ValueError(f"tensor of size {size} needs {needed} elements, its storage holds {available}")
    return torch.empty((0,), dtype=storage.dtype).set_(untyped, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    """Replacement for `torch._utils._rebuild_parameter(_with_state)`: state dicts hold plain tensors."""
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _numpy_scalar() -> Callable[..., Any]:
    """numpy's scalar reconstructor, wherever this numpy version keeps it (moved to `numpy._core` in 2.0)."""
    import numpy  # noqa: F401  (imports numpy._core.multiarray or numpy.core.multiarray)

    multiarray = sys.modules.get("numpy._core.multiarray") or sys.modules.get("numpy.core.multiarray")
    return multiarray.scalar  # type: ignore[union-attr]


def _numpy_dtype() -> type:
    import numpy

    return numpy.dtype


# Python functions standing in for the ones the pickle names. Each use gets a fresh `functools.partial`
# so that a pickle cannot alter (BUILD/setattr) the shared function objects for later loads.
_ALLOWED_FUNCTIONS: dict[tuple[str, str], Callable[..., Any]] = {
    # Every network object of an official pickle is rebuilt through this; we return an inert record.
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    # How plain `pickle` stores torch tensors, parameters and their raw bytes.
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
}
# Immutable built-in types and functions, returned as they are.
_ALLOWED_BUILTINS: dict[tuple[str, str], Callable[[], Any]] = {
    # nn.Module keeps _parameters/_buffers/_modules and its hook tables in OrderedDicts.
    ("collections", "OrderedDict"): lambda: OrderedDict,
    # Protocol-3 pickles (Python 3.7, what MAT was trained with) store sets through the builtin type,
    # e.g. nn.Module._non_persistent_buffers_set.
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
    # Layers keep gains as numpy float64 scalars (`weight_gain = 1 / np.sqrt(fan_in)`).
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}
# Training options (`training_set_kwargs`, networks' `_init_kwargs`) are dnnlib EasyDicts: plain dicts here.
_EASYDICT_GLOBALS = frozenset({("dnnlib.util", "EasyDict"), ("dnnlib", "EasyDict")})
# Stock torch.nn modules used inside MAT (ModuleList, Sequential, Softmax, AdaptiveAvgPool2d, ...) are
# pickled by class reference; they become TorchModuleRecord subclasses. See `_RestrictedUnpickler`.
_TORCH_NN_PREFIX = "torch.nn.modules."

ALLOWED_GLOBALS: frozenset[str] = frozenset(
    f"{module}.{name}" for module, name in (*_ALLOWED_FUNCTIONS, *_ALLOWED_BUILTINS, *_EASYDICT_GLOBALS)
) | {_TORCH_NN_PREFIX + "*.<nn.Module subclass>"}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only from the allow-list above and never imports anything.

    Stand-in classes are created per unpickler, so nothing a hostile file does to them outlives its load.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._stand_in_types: dict[str, type] = {}

    def _stand_in(self, qualified_name: str, base: type, attrs: dict[str, Any]) -> type:
        if qualified_name not in self._stand_in_types:
            short = qualified_name.rsplit(".", 1)[-1]
            self._stand_in_types[qualified_name] = type(short, (base,), attrs)
        return self._stand_in_types[qualified_name]

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED_FUNCTIONS:
            return functools.partial(_ALLOWED_FUNCTIONS[key])
        if key in _ALLOWED_BUILTINS:
            return _ALLOWED_BUILTINS[key]()
        if key in _EASYDICT_GLOBALS:
            return self._stand_in("dnnlib.util.EasyDict", dict, {})
        if module.startswith(_TORCH_NN_PREFIX):
            # torch.nn is imported with torch; look the name up only to confirm it is a real module class.
            candidate = getattr(sys.modules.get(module), name, None)
            if isinstance(candidate, type) and issubclass(candidate, torch.nn.Module):
                qualified = f"{module}.{name}"
                return self._stand_in(qualified, TorchModuleRecord, {"class_name": qualified})
        raise UnsafeCheckpointError(
            f"checkpoint tried to load the global '{module}.{name}', which is not on the allow-list of a "
            "weights file; refused (loading it could run arbitrary code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"unexpected persistent id {pid!r} in a plain pickle")


def _module_state_dict(record: Any, prefix: str, out: StateDict, depth: int = 0) -> None:
    """Flatten one module record like `nn.Module.state_dict()`: parameters, persistent buffers, children."""
    where = prefix.rstrip(".") or "<root>"
    if depth > _MAX_MODULE_DEPTH:
        raise ValueError(f"module nesting deeper than {_MAX_MODULE_DEPTH} at '{where}' (cyclic or malformed pickle)")
    if not isinstance(record, (PersistentObjectRecord, TorchModuleRecord)):
        raise ValueError(f"'{where}' is a {type(record).__name__}, not a module")
    state = getattr(record, "state", None)  # a record the pickle never BUILDs has no state
    parameters, buffers, children = (
        state.get(key, {}) if isinstance(state, dict) else None for key in ("_parameters", "_buffers", "_modules")
    )
    non_persistent = state.get("_non_persistent_buffers_set", set()) if isinstance(state, dict) else None
    if not (isinstance(parameters, dict) and isinstance(buffers, dict) and isinstance(children, dict)
            and isinstance(non_persistent, (set, frozenset)) and "_parameters" in state):
        raise ValueError(f"'{where}' ({record.class_name}) does not hold an nn.Module state")
    entries = [*parameters.items(), *((k, v) for k, v in buffers.items() if k not in non_persistent)]
    for name, tensor in entries:
        if tensor is None:  # optional parameters/buffers (e.g. bias=False) are not in state_dict() either
            continue
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"'{where}' has a {type(tensor).__name__} entry {name!r}, expected named tensors")
        out[prefix + name] = tensor
    for name, child in children.items():
        if child is not None:
            if not isinstance(name, str):
                raise ValueError(f"'{where}' has a submodule named {name!r}")
            _module_state_dict(child, f"{prefix}{name}.", out, depth + 1)


# What a damaged or malformed (but not unsafe) pickle raises while loading through the stand-ins above.
_PICKLE_DATA_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError,
)


def _read_official_pickle(path: Path) -> dict[str, StateDict]:
    try:
        with open(path, "rb") as handle:
            snapshot = _RestrictedUnpickler(handle).load()
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path}: {exc}") from None
    except _PICKLE_DATA_ERRORS as exc:
        raise ValueError(
            f"{path}: unreadable, truncated or malformed pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(snapshot, dict):
        raise ValueError(f"{path}: pickle holds a {type(snapshot).__name__}, expected a MAT snapshot dict")
    networks: dict[str, StateDict] = {}
    for name in NETWORK_NAMES:
        if snapshot.get(name) is not None:
            flat: StateDict = {}
            try:
                _module_state_dict(snapshot[name], "", flat)
            except ValueError as exc:
                raise ValueError(f"{path}: network '{name}': {exc}") from None
            networks[name] = flat
    if not networks:
        keys = ", ".join(sorted(map(str, snapshot)))
        raise ValueError(f"{path}: no networks ({', '.join(NETWORK_NAMES)}) in the pickle (keys: {keys})")
    return networks


# --------------------------------------------------------------------------------------------------
# torch.save files


def _strip_common_prefix(state: StateDict) -> StateDict:
    """Drop a wrapper prefix shared by every key (DataParallel's `module.`, Lightning's `model.`)."""
    for _ in range(2):  # `module.model.` happens
        for prefix in ("module.", "model."):
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix):]: value for key, value in state.items()}
                break
        else:
            break
    return state


def _tensors_only(mapping: Mapping[Any, Any], path: Path) -> StateDict:
    tensors = {str(k): v for k, v in mapping.items() if isinstance(v, torch.Tensor)}
    skipped = len(mapping) - len(tensors)
    if skipped:
        log.debug("%s: ignored %d non-tensor entries", path, skipped)
    if not tensors:
        raise ValueError(f"{path}: no tensors found in the state dict")
    return tensors


def _networks_from_torch_object(obj: Any, path: Path) -> dict[str, StateDict]:
    """Find the network state dict(s) in what `torch.load` returned."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    named = {name: obj[name] for name in NETWORK_NAMES if isinstance(obj.get(name), Mapping)}
    if named:
        return {name: _strip_common_prefix(_tensors_only(sd, path)) for name, sd in named.items()}
    if isinstance(obj.get("state_dict"), Mapping):
        return _networks_from_torch_object(obj["state_dict"], path)
    flat = _strip_common_prefix(_tensors_only(obj, path))
    # One file holding several networks flattened as `G_ema.x`, `D.y`, ...
    split: dict[str, StateDict] = {}
    for key, tensor in flat.items():
        network, _, rest = key.partition(".")
        if network not in NETWORK_NAMES or not rest:
            return {"G_ema": flat}
        split.setdefault(network, {})[rest] = tensor
    return {name: split[name] for name in NETWORK_NAMES if name in split}


_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _first_sentence(text: str) -> str:
    """torch's loader errors run to several sentences of advice; the first one says what is wrong."""
    return text.strip().split(". ", 1)[0].splitlines()[0] if text.strip() else "no details"


def _read_torch_file(path: Path) -> dict[str, StateDict]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            found = _GLOBAL_IN_MESSAGE.search(text)
            what = f"the global '{found.group(1)}'" if found else "a Python object"
            raise UnsafeCheckpointError(
                f"{path}: refused: the file asks to load {what}, which a weights-only state dict never "
                "needs (it could run arbitrary code). Re-save it as a plain state dict or safetensors "
                "in an environment you trust."
            ) from None
        raise ValueError(f"{path}: unreadable torch checkpoint ({_first_sentence(text)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(
            f"{path}: unreadable or truncated torch checkpoint ({type(exc).__name__}: {_first_sentence(str(exc))})"
        ) from None
    return _networks_from_torch_object(obj, path)


# --------------------------------------------------------------------------------------------------
# safetensors


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata stored in a safetensors header (source checksum, network, ...)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError, not a ValueError
        raise ValueError(f"{path}: unreadable safetensors file ({exc})") from None


def _read_safetensors(path: Path) -> dict[str, StateDict]:
    from safetensors.torch import load_file

    metadata = read_safetensors_metadata(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"{path}: unreadable or truncated safetensors file ({exc})") from None
    return {metadata.get("network", "G_ema"): tensors}


# --------------------------------------------------------------------------------------------------
# Public entry points


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, StateDict]:
    """Read a checkpoint into ``{network: flat state dict}`` without executing anything from the file.

    - official MAT `.pkl` snapshots give every network present among `G_ema`, `G`, `D`;
    - a torch state dict gives `{"G_ema": ...}` (a `module.`/`model.` prefix is dropped) unless it is
      keyed by network (`{"G": {...}, "D": {...}}` or `G_ema.`-prefixed keys), then each network;
    - a safetensors file gives its one network, named by its `network` metadata (default `G_ema`).

    Raises UnsafeCheckpointError when the file asks for code or arbitrary objects, ValueError (naming the
    file) for empty, truncated or unrecognised files, and OSError when the file cannot be opened.
    """
    path = Path(path)
    kind = detect_format(path)
    if kind == "official-pickle":
        networks = _read_official_pickle(path)
    elif kind == "safetensors":
        networks = _read_safetensors(path)
    else:
        networks = _read_torch_file(path)
    log.debug("%s (%s): %s", path, kind, {name: len(sd) for name, sd in networks.items()})
    return networks


def _independent_contiguous(state: StateDict) -> StateDict:
    """Tensors safetensors will accept: contiguous, CPU, and no two sharing memory."""
    out: StateDict = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer and pointer in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def convert_checkpoint(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], network: str = "G_ema"
) -> dict[str, str]:
    """Convert one network of any supported checkpoint to safetensors, atomically; return its metadata.

    The metadata records where the weights came from (`source_name`, `source_sha256`) so outputs made
    with the converted file can be traced back to the original download. The file appears at `dst`
    only once fully written (temp file in the same directory, then `os.replace`).
    """
    from safetensors.torch import save_file

    src, dst = Path(src), Path(dst)
    networks = read_checkpoint(src)
    if network not in networks:
        raise ValueError(f"{src}: no network '{network}' (available: {', '.join(networks)})")
    tensors = _independent_contiguous(networks[network])
    metadata = {
        "format_version": SAFETENSORS_FORMAT_VERSION,
        "network": network,
        "source_name": src.name,
        "source_sha256": file_sha256(src),
        "source_format": detect_format(src),
        "tensor_count": str(len(tensors)),
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        os.replace(tmp_name, dst)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return metadata
