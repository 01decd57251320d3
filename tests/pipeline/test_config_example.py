"""The commented example config: `examples/sample-job.yaml` and `matpipe config --example` list every
field with its true default, and load as the job they describe."""
from __future__ import annotations

import dataclasses
import os
import re

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import JobConfig
from pipeline.config_example import render_example
from pipeline.masks.registry import config_type, default_postprocess
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "sample-job.yaml"
_COMMENTED_FIELD = re.compile(r"^(?P<indent>\s*)# (?P<rest>\s*[a-z][a-z0-9_]*:( .*)?)$")


def all_field_names() -> set[str]:
    """Every field a job file can hold: sections, their fields, and each mask method's options."""
    from pipeline.config import BatchSizes
    from pipeline.masks.postprocess import PostprocessConfig

    names = field_names(BatchSizes) | field_names(PostprocessConfig)
    for section in dataclasses.fields(JobConfig):
        names |= {section.name} | field_names(section.default_factory().__class__)
    for method in ("given", "text", "consistent"):
        names |= field_names(config_type(method))
        # Options that are rules of their own (text's `overlay`) list their fields too.
        for item in dataclasses.fields(config_type(method)):
            if item.default_factory is not dataclasses.MISSING or dataclasses.is_dataclass(item.default):
                default = item.default if dataclasses.is_dataclass(item.default) else item.default_factory()
                if dataclasses.is_dataclass(default):
                    names |= field_names(type(default))
    return names


def uncommented(text: str) -> str:
    """The YAML with every commented-out `field: default` line switched on (doc comments stay)."""
    known = all_field_names()
    lines = []
    for line in text.splitlines():
        match = _COMMENTED_FIELD.match(line)
        if match and match.group("rest").strip().split(":")[0] in known:
            line = match.group("indent") + match.group("rest")
        lines.append(line)
    return "\n".join(lines) + "\n"


def field_names(cls: type) -> set[str]:
    return {item.name for item in dataclasses.fields(cls)}


def test_sample_job_loads_and_points_at_the_bundled_watermarked_photos(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # its paths are relative to the repository root, as documented
    config = JobConfig.from_file(EXAMPLE)
    assert config.inputs.uris == ("samples/watermarked",)
    assert sorted(os.listdir(REPO_ROOT / "samples" / "watermarked")) == sorted(
        os.listdir(REPO_ROOT / "samples" / "images"))
    assert config.masks.method == "consistent" and config.output.write_images


def test_sample_job_names_every_field_of_every_section():
    from pipeline.config import BatchSizes

    keys = set(re.findall(r"^\s*(?:#\s*)?([a-z][a-z0-9_]*):", EXAMPLE.read_text(), flags=re.M))
    expected = field_names(BatchSizes) | field_names(config_type("consistent"))
    expected |= field_names(type(default_postprocess("consistent")))
    for section in dataclasses.fields(JobConfig):
        expected |= {section.name} | field_names(section.default_factory().__class__)
    assert expected - keys == set()


def test_sample_job_states_the_true_defaults(monkeypatch):
    """Switching every commented default on gives the very same job: the comments do not lie."""
    monkeypatch.chdir(REPO_ROOT)
    as_written = JobConfig.from_file(EXAMPLE)
    switched_on = JobConfig.from_mapping(yaml.safe_load(uncommented(EXAMPLE.read_text())))
    assert switched_on.to_dict() == as_written.to_dict() or _same_after_defaults(switched_on, as_written)


def _same_after_defaults(switched_on: JobConfig, as_written: JobConfig) -> bool:
    """Mask options and post-processing are stored as given: compare them after filling in defaults."""
    method = as_written.masks.method
    options = config_type(method)
    full = {**dataclasses.asdict(options()), **as_written.masks.options}
    post = {**dataclasses.asdict(default_postprocess(method)), **as_written.masks.postprocess}
    on = switched_on.to_dict()
    written = as_written.to_dict()
    on_masks, written_masks = on.pop("masks"), written.pop("masks")
    return (on == written and on_masks["method"] == written_masks["method"]
            and yaml.safe_load(yaml.safe_dump(full)) == on_masks["options"] and post == on_masks["postprocess"])


def test_sample_job_is_what_config_example_prints(capsys):
    status = main(["config", "--example", "--input", "samples/watermarked", "--output", "out/sample-job",
                   "--masks", "consistent", "--write-images"])
    assert status == 0
    assert capsys.readouterr().out == EXAMPLE.read_text(), (
        "examples/sample-job.yaml is out of date: regenerate it with `matpipe config --example --input "
        "samples/watermarked --output out/sample-job --masks consistent --write-images > examples/sample-job.yaml`")


@pytest.mark.parametrize("method", ["text", "consistent"])
def test_example_of_each_method_states_its_defaults(method, tmp_path):
    values = {"inputs": {"uris": [str(tmp_path)]}, "output": {"uri": str(tmp_path / "out")}, "masks": {"method": method}}
    text = render_example(values)
    switched_on = JobConfig.from_mapping(yaml.safe_load(uncommented(text)))
    assert switched_on.masks.options == yaml.safe_load(yaml.safe_dump(dataclasses.asdict(config_type(method)())))
    assert switched_on.masks.postprocess == dataclasses.asdict(default_postprocess(method))
    assert switched_on.execution == JobConfig.from_mapping(values).execution


def test_config_check_names_the_bad_field(tmp_path, capsys):
    bad = tmp_path / "job.yaml"
    bad.write_text(EXAMPLE.read_text().replace("# shard_size: 1000", "shard_size: 0"))
    assert main(["config", "--check", str(bad)]) == 1
    assert "execution.shard_size: must be >= 1, got 0" in capsys.readouterr().err
