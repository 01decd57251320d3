"""`matpipe weights convert|download|list` as a user runs them."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from matcore.checkpoints import read_checkpoint
from matcore.registry import KNOWN_CHECKPOINTS
from pipeline.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints"
TINY = FIXTURES / "tiny_official_format.pkl"


def test_convert_prints_network_tensor_count_and_source_sha256(tmp_path, capsys):
    out = tmp_path / "places.safetensors"

    assert main(["weights", "convert", str(TINY), str(out)]) == 0

    printed = capsys.readouterr().out
    assert "network G_ema" in printed
    assert "5 tensors" in printed
    assert hashlib.sha256(TINY.read_bytes()).hexdigest() in printed
    assert sorted(read_checkpoint(out)["G_ema"]) == sorted(read_checkpoint(TINY)["G_ema"])


def test_convert_can_pick_the_discriminator(tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    assert main(["weights", "convert", str(TINY), str(out), "--network", "D"]) == 0
    assert "network D, 3 tensors" in capsys.readouterr().out


def test_convert_of_hostile_pickle_fails_with_one_line(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MAT_PWN_MARKER", str(marker))
    out = tmp_path / "out.safetensors"

    assert main(["weights", "convert", str(FIXTURES / "hostile_os_system.pkl"), str(out)]) == 1

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "posix.system" in err and "Traceback" not in err
    assert not out.exists() and not marker.exists()


def test_convert_of_missing_file_fails_with_one_line(tmp_path, capsys):
    assert main(["weights", "convert", str(tmp_path / "nope.pkl"), str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope.pkl" in err


@pytest.fixture
def tiny_entry(tmp_path, monkeypatch):
    """A registry entry whose file is 'published' at a file:// URL (no network needed)."""
    published = tmp_path / "published.bin"
    published.write_bytes(b"weights" * 1000)
    spec = replace(
        KNOWN_CHECKPOINTS["places512-iopaint"], name="tiny", filename="tiny.bin",
        url=published.as_uri(), md5=hashlib.md5(published.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", spec)
    return spec


def test_download_prints_the_cached_path(tmp_path, capsys, tiny_entry):
    cache = tmp_path / "cache"

    assert main(["weights", "download", "tiny", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "tiny.bin")
    assert (cache / "tiny.bin").read_bytes() == b"weights" * 1000

    # A second run finds the verified file without downloading again.
    Path(tiny_entry.url.removeprefix("file://")).unlink()
    assert main(["weights", "download", "tiny", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "tiny.bin")


def test_download_offline_fails_with_one_line_saying_where_to_put_the_file(tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["weights", "download", "places512-iopaint", "--cache-dir", str(cache),
            "--url", "http://127.0.0.1:9/x", "--timeout", "3"]

    assert main(argv) == 1

    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(cache / "Places_512_FullData_G.pth") in err


def test_download_of_official_checkpoint_explains_the_manual_step(tmp_path, capsys):
    assert main(["weights", "download", "places512", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "Places_512_FullData.pkl") in err and "sharepoint" in err


def test_list_shows_known_checkpoints_and_what_is_cached(tmp_path, capsys):
    (tmp_path / "Places_512_FullData.pkl").write_bytes(b"x")

    assert main(["weights", "list", "--cache-dir", str(tmp_path)]) == 0

    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["places512"][3] == "yes"
    assert rows["celeba256"][1:4] == ["256", "CelebA-HQ_256.pkl", "no"]
    assert rows["places512-iopaint"][-1].startswith("https://github.com/Sanster/models/")
