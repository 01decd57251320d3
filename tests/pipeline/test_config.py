"""JobConfig: loading from YAML/JSON, up-front validation with dotted paths, canonical form and hash."""
from __future__ import annotations

import json

import pytest

from pipeline.config import ConfigError, JobConfig


def minimal(tmp_path, **sections):
    data = {"inputs": {"uris": [str(tmp_path)]}, "output": {"uri": str(tmp_path / "out")}}
    data.update(sections)
    return data


def test_yaml_and_json_files_give_equal_configs(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    yaml_file = tmp_path / "job.yaml"
    yaml_file.write_text(
        f"inputs:\n  uris: [{tmp_path}]\noutput:\n  uri: {tmp_path / 'out'}\n  write_images: true\n"
        f"masks:\n  method: given\n  options: {{mask_dir: {masks}}}\n"
        "engine:\n  name: opencv\nexecution:\n  shard_size: 50\n  batch_size: {inpaint: 2}\n"
    )
    from_yaml = JobConfig.from_file(yaml_file)
    json_file = tmp_path / "job.json"
    json_file.write_text(json.dumps(from_yaml.to_dict()))

    assert JobConfig.from_file(json_file) == from_yaml
    assert from_yaml.execution.batch_size.inpaint == 2 and from_yaml.execution.batch_size.decode == 8
    assert from_yaml.output.write_images is True
    assert JobConfig.from_mapping(from_yaml.to_dict()) == from_yaml


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"execution": {"shard_sise": 10}}, "execution: unknown key(s) execution.shard_sise"),
        ({"execution": {"shard_size": 0}}, "execution.shard_size: must be >= 1, got 0"),
        ({"execution": {"task_concurrency": 0}}, "execution.task_concurrency: must be >= 1, got 0"),
        ({"execution": {"batch_size": {"inpaint": "4"}}}, "execution.batch_size.inpaint: expected an integer"),
        ({"engine": {"name": "gan"}}, "engine.name: expected 'auto' or 'mat' or 'opencv', got 'gan'"),
        ({"masks": {"method": "given"}}, "masks.options: given masks need exactly one of mask_dir or parquet"),
        ({"masks": {"method": "text", "options": {"colour": "red"}}}, "masks.options: unknown option(s)"),
        ({"masks": {"postprocess": {"dilate": 3}}}, "masks.postprocess: unknown option(s)"),
        ({"inputs": {"uris": []}}, "inputs.uris: at least one input URI is required"),
        ({"inputs": {"uris": "one/path"}}, "inputs.uris: expected a list"),
        ({"output": {"uri": ""}}, "output.uri: an output URI is required"),
        ({"output": {"uri": "o", "jpeg_tables": "medium"}}, "output.jpeg_tables: expected 'high' or 'source'"),
        ({"execution": {"ray_address": "nowhere"}}, "execution.ray_address: expected 'auto'"),
        ({"metrics": {"enabled": "yes"}}, "metrics.enabled: expected true or false"),
        ({"engine": {"options": {"batchsize": 8}}}, "engine.options.batchsize: unknown option for engine 'mat'"),
        ({"engine": {"options": {"batch_size": 0}}}, "engine.options.batch_size: must be in [1, 1024], got 0"),
        ({"engine": {"options": {"strategy": "tile"}}}, "engine.options.strategy: expected 'auto' or 'crop'"),
        ({"engine": {"name": "opencv", "options": {"radius": "3"}}}, "engine.options.radius: expected int, got '3'"),
        ({"engine": {"name": "opencv", "options": {"batch_size": 4}}},
         "engine.options.batch_size: unknown option for engine 'opencv' (valid: method, radius)"),
        ({"engine": {"dtype": "float64"}}, "engine.dtype: expected 'auto' or 'float32'"),
        ({"engine": {"checkpoint_sha256": "abc"}}, "engine.checkpoint_sha256: expected 64 hexadecimal digits"),
    ],
)
def test_bad_values_fail_up_front_naming_the_field(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        JobConfig.from_mapping(minimal(tmp_path, **change))
    assert message in str(error.value)


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "job.yaml"
    broken.write_text("inputs: [unclosed\n")
    with pytest.raises(ConfigError, match="job.yaml is not valid YAML/JSON"):
        JobConfig.from_file(broken)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(f"inputs: {{uris: [{tmp_path}]}}\noutput: {{uri: x}}\nengine: {{seed: -1}}\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: engine.seed: must be >= 0"):
        JobConfig.from_file(wrong)
    with pytest.raises(ConfigError, match="cannot read config file"):
        JobConfig.from_file(tmp_path / "missing.yaml")


def test_hash_follows_what_changes_the_output_only(tmp_path):
    base = JobConfig.from_mapping(minimal(tmp_path))

    # Where and how fast it runs does not change the output: same hash, so such a rerun resumes.
    faster = base.replace(execution={"ray_address": "auto", "batch_size": {"inpaint": 16}, "inpaint_actors": 4})
    assert faster.content_hash() == base.content_hash()
    assert faster.canonical_json() != base.canonical_json()

    # Seeds, engines, metrics, output options and the shard plan do.
    for changed in (base.replace(engine={"seed": 1}), base.replace(execution={"shard_size": 7}),
                    base.replace(output={"write_images": True}), base.replace(metrics={"ring_px": 3})):
        assert changed.content_hash() != base.content_hash()
    # Resolved facts (the engine `auto` picked, the weights' sha256) are part of it too.
    assert base.content_hash({"engine": "mat"}) != base.content_hash({"engine": "opencv"})


def test_canonical_json_is_stable_and_sorted(tmp_path):
    config = JobConfig.from_mapping(minimal(tmp_path, engine={"options": {"truncation_psi": 1, "batch_size": 2}}))
    text = config.canonical_json()
    assert text == JobConfig.from_mapping(json.loads(text)).canonical_json()
    assert " " not in text.replace(str(tmp_path), "")
    assert text.index('"batch_size":2') < text.index('"truncation_psi":1')


def test_replace_keeps_the_other_fields_and_validates(tmp_path):
    config = JobConfig.from_mapping(minimal(tmp_path, engine={"name": "opencv", "seed": 5}))
    updated = config.replace(engine={"seed": 9})
    assert (updated.engine.name, updated.engine.seed) == ("opencv", 9)
    with pytest.raises(ConfigError, match="engine.seed"):
        config.replace(engine={"seed": "nine"})
