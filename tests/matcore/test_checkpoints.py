"""Safe checkpoint reading: official pickles without their code, torch files, safetensors, conversion."""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
import types
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from matcore.checkpoints import (
    UnsafeCheckpointError,
    convert_checkpoint,
    detect_format,
    file_sha256,
    read_checkpoint,
    read_safetensors_metadata,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
TINY = FIXTURES / "tiny_official_format.pkl"


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


# --------------------------------------------------------------------------------------------------
# Writing StyleGAN2-ADA style persistent pickles for tests, without the real torch_utils package.


def _fake_reconstruct(meta):  # pragma: no cover - only referenced by name inside the pickles
    raise AssertionError("the reader must never call the real reconstruct function")


class _Persistent:
    """Pickles as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, like the official files."""

    def __init__(self, class_name: str, state: dict, module_src: str = "raise SystemExit('executed')\n"):
        self.meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}

    def __reduce__(self):
        return _fake_reconstruct, (self.meta,)


class PersistentModule(nn.Module):
    """An nn.Module that pickles through the persistence hook, as every MAT network class does."""

    def __reduce__(self):
        return _Persistent(type(self).__name__, self.__dict__).__reduce__()


@pytest.fixture
def persistence_pickler(monkeypatch: pytest.MonkeyPatch):
    """`dumps(obj, protocol)` with a stand-in `torch_utils.persistence` visible only while pickling."""

    def dumps(obj, protocol: int = 4) -> bytes:
        package = types.ModuleType("torch_utils")
        module = types.ModuleType("torch_utils.persistence")
        module._reconstruct_persistent_obj = _fake_reconstruct
        package.persistence = module
        with monkeypatch.context() as patch:
            patch.setattr(_fake_reconstruct, "__module__", "torch_utils.persistence")
            patch.setattr(_fake_reconstruct, "__qualname__", "_reconstruct_persistent_obj")
            patch.setitem(sys.modules, "torch_utils", package)
            patch.setitem(sys.modules, "torch_utils.persistence", module)
            return pickle.dumps(obj, protocol=protocol)

    return dumps


# --------------------------------------------------------------------------------------------------
# Official pickles


def test_official_pickle_gives_exactly_the_expected_state_dicts():
    expected = np.load(FIXTURES / "tiny_official_format_expected.npz")
    networks = read_checkpoint(TINY)

    assert list(networks) == ["G_ema", "G", "D"]
    got = {f"{net}/{name}": tensor for net, state in networks.items() for name, tensor in state.items()}
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
        assert got[key].dtype == torch.from_numpy(expected[key]).dtype, key
        np.testing.assert_array_equal(got[key].numpy(), expected[key], err_msg=key)


def test_official_pickle_is_read_without_importing_its_packages():
    read_checkpoint(TINY)
    assert "torch_utils" not in sys.modules
    assert "dnnlib" not in sys.modules


def test_embedded_module_source_is_never_executed(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MAT_PWN_MARKER", str(marker))

    networks = read_checkpoint(FIXTURES / "hostile_embedded_source.pkl")

    assert not marker.exists()
    assert torch.equal(networks["G_ema"]["weight"], torch.ones(2, 2))


def test_pickle_calling_os_system_is_refused_and_names_the_call(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MAT_PWN_MARKER", str(marker))

    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system") as excinfo:
        read_checkpoint(FIXTURES / "hostile_os_system.pkl")

    assert "hostile_os_system.pkl" in str(excinfo.value)
    assert not marker.exists()


class _Block(PersistentModule):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=False)  # stock module, bias=None parameter
        self.weight = nn.Parameter(torch.randn(3, 2))
        self.gain = np.float64(0.125)  # official layers keep numpy gains
        self.register_buffer("resample_filter", torch.arange(4.0))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)  # not in state_dict()
        self.register_buffer("attn_mask", None)  # None buffers are skipped


class _Net(PersistentModule):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Sequential(nn.Linear(3, 2), nn.Softmax(dim=-1), nn.AdaptiveAvgPool2d(1))
        self.register_buffer("w_avg", torch.randn(5, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(7))
        self.scale16 = nn.Parameter(torch.randn(2, dtype=torch.float16))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_pickled_network_flattens_like_state_dict(tmp_path, persistence_pickler, protocol):
    """Protocol 3 is what Python 3.7 (MAT's environment) wrote; nested stock modules must work too."""
    torch.manual_seed(0)
    generator, discriminator = _Net(), _Block()
    path = tmp_path / "snapshot.pkl"
    path.write_bytes(persistence_pickler(
        {"G": generator, "D": discriminator, "G_ema": generator, "augment_pipe": None}, protocol=protocol
    ))

    networks = read_checkpoint(path)

    assert sorted(networks) == ["D", "G", "G_ema"]
    assert_same_state(networks["G_ema"], generator.state_dict())
    assert_same_state(networks["D"], discriminator.state_dict())
    assert "blocks.0.scratch" not in networks["G_ema"]


def test_tensor_reading_past_its_storage_is_refused(tmp_path, persistence_pickler):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
        storage = torch.ones(4).storage()

    class OversizedTensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (1000,), (1,), False, OrderedDict())

    state = {"_parameters": {"weight": OversizedTensor()}, "_buffers": {}, "_modules": {}}
    path = tmp_path / "oversized.pkl"
    path.write_bytes(persistence_pickler({"G_ema": _Persistent("Evil", state)}))

    with pytest.raises(ValueError, match="needs 1000 elements"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    "state",
    [
        {"_parameters": {}, "_buffers": {}, "_modules": {"fc": "not a module"}},
        {"_parameters": {"weight": [1.0, 2.0]}, "_buffers": {}, "_modules": {}},
        {"_parameters": ["weight"], "_buffers": {}, "_modules": {}},
        {"weights": "no module state at all"},
    ],
    ids=["child-not-module", "parameter-not-tensor", "parameters-not-dict", "no-module-state"],
)
def test_malformed_network_state_is_a_clear_error(tmp_path, persistence_pickler, state):
    path = tmp_path / "malformed.pkl"
    path.write_bytes(persistence_pickler({"G_ema": _Persistent("Odd", state)}))
    with pytest.raises(ValueError, match="network 'G_ema'") as excinfo:
        read_checkpoint(path)
    assert not isinstance(excinfo.value, UnsafeCheckpointError)


def test_pickle_without_networks_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"something": [1, 2, 3]}))
    with pytest.raises(ValueError, match="no networks"):
        read_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# Damaged files


@pytest.mark.parametrize("suffix", [".pkl", ".pth", ".safetensors"])
def test_empty_file_is_a_clear_error(tmp_path, suffix):
    path = tmp_path / f"empty{suffix}"
    path.touch()
    with pytest.raises(ValueError, match="empty") as excinfo:
        read_checkpoint(path)
    assert str(path) in str(excinfo.value)


def _truncated_copies(tmp_path: Path) -> list[Path]:
    state = {"module.weight": torch.randn(64, 64), "module.bias": torch.randn(64)}
    sources = {"official.pkl": TINY.read_bytes()}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    convert_checkpoint(TINY, tmp_path / "weights.safetensors")
    for name in ("zip.pth", "legacy.pth", "weights.safetensors"):
        sources[name] = (tmp_path / name).read_bytes()
    paths = []
    for name, data in sources.items():
        path = tmp_path / f"truncated_{name}"
        path.write_bytes(data[: len(data) * 2 // 3])
        paths.append(path)
    return paths


def test_truncated_files_are_a_clear_error(tmp_path):
    for path in _truncated_copies(tmp_path):
        with pytest.raises(ValueError) as excinfo:
            read_checkpoint(path)
        assert not isinstance(excinfo.value, UnsafeCheckpointError), path.name
        assert str(path) in str(excinfo.value), path.name


def test_unknown_content_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="not a checkpoint"):
        read_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# torch.save files


def test_pth_state_dict_with_module_prefix_round_trips(tmp_path):
    state = {
        "module.mapping.fc0.weight": torch.randn(4, 4),
        "module.mapping.w_avg": torch.randn(4, dtype=torch.float64),
        "module.synthesis.noise_const": torch.randn(2, 2, dtype=torch.float16),
        "module.steps": torch.tensor(3),
    }
    path = tmp_path / "Places_512_FullData_G.pth"
    torch.save(state, path)

    networks = read_checkpoint(path)

    assert list(networks) == ["G_ema"]
    assert_same_state(networks["G_ema"], {k.removeprefix("module."): v for k, v in state.items()})


def test_pth_keyed_by_network_gives_every_network(tmp_path):
    g, d = {"w": torch.randn(3)}, {"v": torch.randn(2)}
    torch.save({"G_ema": g, "D": d, "epoch": 5}, tmp_path / "nets.pth")
    torch.save({"state_dict": {"G_ema.w": g["w"], "D.v": d["v"]}}, tmp_path / "wrapped.ckpt")

    for name in ("nets.pth", "wrapped.ckpt"):
        networks = read_checkpoint(tmp_path / name)
        assert sorted(networks) == ["D", "G_ema"], name
        assert_same_state(networks["G_ema"], g)
        assert_same_state(networks["D"], d)


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _ArbitraryObject:
    pass


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (lambda marker: _RunsShell(f"echo pwned > '{marker}'"), r"(posix|os|nt)\.system"),
        (lambda marker: _ArbitraryObject(), "_ArbitraryObject"),
    ],
    ids=["os.system", "custom-class"],
)
def test_pth_with_pickled_objects_is_refused(tmp_path, payload, named):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2), "extra": payload(marker)}, path)

    with pytest.raises(UnsafeCheckpointError, match=named):
        read_checkpoint(path)
    assert not marker.exists()


def test_format_is_detected_from_content_not_extension(tmp_path):
    disguised_pickle = tmp_path / "official.pth"
    shutil.copy(TINY, disguised_pickle)
    disguised_zip = tmp_path / "weights.pkl"
    torch.save({"w": torch.ones(1)}, disguised_zip)

    assert detect_format(disguised_pickle) == "official-pickle"
    assert detect_format(disguised_zip) == "torch-zip"
    assert sorted(read_checkpoint(disguised_pickle)) == ["D", "G", "G_ema"]
    assert list(read_checkpoint(disguised_zip)) == ["G_ema"]


# --------------------------------------------------------------------------------------------------
# Conversion to safetensors


def test_file_sha256_matches_hashlib():
    assert file_sha256(TINY) == hashlib.sha256(TINY.read_bytes()).hexdigest()


def test_convert_to_safetensors_round_trips_tensors_and_records_the_source(tmp_path):
    out = tmp_path / "places.safetensors"

    metadata = convert_checkpoint(TINY, out)

    assert_same_state(read_checkpoint(out)["G_ema"], read_checkpoint(TINY)["G_ema"])
    assert detect_format(out) == "safetensors"
    assert metadata["source_sha256"] == hashlib.sha256(TINY.read_bytes()).hexdigest()
    assert metadata["source_name"] == TINY.name
    assert metadata["network"] == "G_ema"
    assert metadata["format_version"] == "1"
    assert read_safetensors_metadata(out) == metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["places.safetensors"]  # no temp file left


def test_convert_other_network_keeps_its_name(tmp_path):
    out = tmp_path / "d.safetensors"
    convert_checkpoint(TINY, out, network="D")
    networks = read_checkpoint(out)
    assert list(networks) == ["D"]
    assert_same_state(networks["D"], read_checkpoint(TINY)["D"])


def test_convert_missing_network_names_the_available_ones(tmp_path):
    with pytest.raises(ValueError, match="G_ema, G, D"):
        convert_checkpoint(TINY, tmp_path / "x.safetensors", network="augment_pipe")
    assert list(tmp_path.iterdir()) == []


def test_convert_handles_tensors_sharing_memory(tmp_path):
    tied = torch.randn(3, 3)
    src = tmp_path / "tied.pth"
    torch.save({"a": tied, "b": tied, "row": tied[1]}, src)

    convert_checkpoint(src, tmp_path / "tied.safetensors")

    state = read_checkpoint(tmp_path / "tied.safetensors")["G_ema"]
    assert_same_state(state, {"a": tied, "b": tied, "row": tied[1].clone()})


def test_convert_refuses_hostile_input_and_writes_nothing(tmp_path):
    with pytest.raises(UnsafeCheckpointError):
        convert_checkpoint(FIXTURES / "hostile_os_system.pkl", tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []
