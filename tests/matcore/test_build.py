"""One engine builder: the registry of engines, their typed options, and the "auto" engine choice."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from matcore import registry
from matcore.build import (
    EngineOptionError,
    MatOptions,
    OpenCVOptions,
    build_engine,
    choose_engine,
    engine_options,
    engine_registry,
)
from matcore.classical import ClassicalInpainter
from matcore.inpainter import Inpainter
from matcore.pinned import pin_checkpoint
from matcore.registry import ChecksumMismatchError, CheckpointUnavailableError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mat256_file(tmp_path_factory: pytest.TempPathFactory, generator256) -> Path:
    path = tmp_path_factory.mktemp("weights") / "mat256.safetensors"
    save_file({k: v.contiguous() for k, v in generator256.state_dict().items()}, str(path))
    return path


def test_the_registry_names_every_engine_with_its_options() -> None:
    assert set(engine_registry) == {"mat", "opencv"}
    assert engine_registry["mat"].options is MatOptions and engine_registry["mat"].needs_checkpoint
    assert engine_registry["opencv"].options is OpenCVOptions and not engine_registry["opencv"].needs_checkpoint


@pytest.mark.parametrize(("name", "options", "option", "message"), [
    ("mat", {"batchsize": 2}, "batchsize", "unknown option for engine 'mat'"),
    ("mat", {"batch_size": 0}, "batch_size", "must be in [1, 1024]"),
    ("mat", {"batch_size": 2.5}, "batch_size", "expected int"),
    ("mat", {"strategy": "tile"}, "strategy", "expected 'auto' or 'crop' or 'resize'"),
    ("mat", {"context": 0.5}, "context", "must be a finite number >= 1"),
    ("mat", {"truncation_psi": True}, "truncation_psi", "expected a number"),
    ("mat", {"margin": "8"}, "margin", "expected int or null"),
    ("opencv", {"method": "fmm"}, "method", "expected 'telea' or 'ns'"),
    ("opencv", {"radius": 0}, "radius", "must be in [1, 100]"),
])
def test_bad_options_name_the_option(name: str, options: dict, option: str, message: str) -> None:
    with pytest.raises(EngineOptionError) as error:
        engine_options(name, options)
    assert error.value.option == option and message in str(error.value)


def test_options_convert_to_their_types() -> None:
    assert engine_options("mat", {"context": 2, "margin": None}) == MatOptions(context=2.0, margin=None)
    assert engine_options("opencv", None) == OpenCVOptions()
    assert engine_options("opencv", OpenCVOptions(method="ns")).method == "ns"
    with pytest.raises(ValueError, match="unknown engine 'gan'"):
        engine_options("gan", {})


def test_opencv_builds_without_torch() -> None:
    # A CPU actor that only runs OpenCV must not pay for importing torch.
    code = ("import sys; from matcore.build import build_engine; e = build_engine('opencv', {'method': 'ns'}); "
            "print(e.info.model, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.split()
    assert out == ["ns", "r=3", "False"]


def test_mat_builds_from_a_pinned_checkpoint_with_its_options_and_precision(mat256_file: Path,
                                                                            tmp_path: Path) -> None:
    ref = pin_checkpoint(str(mat256_file), cache_dir=tmp_path)
    engine = build_engine("mat", {"batch_size": 3, "strategy": "crop"}, checkpoint=ref, device="cpu",
                          precision="bfloat16", cache_dir=tmp_path)
    assert isinstance(engine, Inpainter)
    assert (engine.batch_size, engine.window_config.strategy) == (3, "crop")
    assert engine.info.dtype == "bfloat16" and engine.info.device == "cpu"  # honoured on CPU too
    # (A forward in bf16 on CPU is exercised end to end by tests/pipeline/test_job.py's MAT job.)


def test_auto_picks_mat_when_the_checkpoint_resolves(mat256_file: Path, tmp_path: Path) -> None:
    choice = choose_engine("auto", str(mat256_file), cache_dir=tmp_path)
    assert choice.name == "mat" and choice.checkpoint.source == str(mat256_file) and choice.warning is None
    assert choose_engine("opencv", "places512").checkpoint is None


def test_auto_falls_back_loudly_only_when_the_checkpoint_is_missing(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATPIPE_CACHE_DIR", str(tmp_path / "empty-cache"))
    choice = choose_engine("auto", "places512")
    assert choice.name == "opencv" and "NO MAT CHECKPOINT" in choice.warning and "places512" in choice.warning
    with pytest.raises(CheckpointUnavailableError):
        choose_engine("mat", "places512")
    with pytest.raises(CheckpointUnavailableError):
        choose_engine("auto", "places512", allow_fallback=False)
    # A cached file with the wrong checksum is an error to fix, not a reason to switch engines.
    spec = registry.KnownCheckpoint(name="tiny", filename="tiny.pkl", url=None, sha256="0" * 64, md5=None,
                                    resolution=256, license_note="test", description="test")
    monkeypatch.setitem(registry.KNOWN_CHECKPOINTS, "tiny", spec)
    (tmp_path / "empty-cache").mkdir()
    (tmp_path / "empty-cache" / "tiny.pkl").write_bytes(b"corrupted")
    with pytest.raises(ChecksumMismatchError, match="not the expected tiny checkpoint"):
        choose_engine("auto", "tiny")


def test_opencv_ignores_precision_and_device() -> None:
    engine = build_engine("opencv", precision="bfloat16", device="cuda")
    assert isinstance(engine, ClassicalInpainter) and engine.info.dtype == "uint8"


def test_precision_names_are_checked() -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        from matcore.precision import resolve_precision

        resolve_precision("float64", torch.device("cpu"))
