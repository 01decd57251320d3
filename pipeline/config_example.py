"""A commented job configuration, written from the config dataclasses themselves.

`render_example(values)` gives YAML where every section and every field appears with its documentation
(taken from the dataclass docstrings, the one place those facts live) and its default, commented out;
only the fields in `values` are set. `matpipe config --example` prints it and `examples/sample-job.yaml`
is one (tests check that it loads, names every field and states the true defaults). The chosen mask
method's own options and its benchmarked post-processing are listed too.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap
from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.config import JobConfig, to_plain

WIDTH = 100
_ATTRIBUTE = re.compile(r"^(?P<names>[A-Za-z_][\w ]*(?:/ *[A-Za-z_]\w*)*):\s*(?P<text>.*)$")

HEADER = """\
matpipe job configuration: every section and field, with its default.
Lines starting with '#' are defaults: uncomment one to change it. Relative paths are relative to the
folder the command runs in (the repository root for the bundled sample).
Use it with:  matpipe run --config FILE
              python -c "from flows.restore import restore_dataset; restore_dataset(config_path='FILE')"
              ray job submit --working-dir . -- python -m flows.ray_entry --config FILE
Check it with: matpipe config --check FILE"""


def field_docs(cls: type) -> tuple[str, dict[str, str]]:
    """(summary, {field: text}) from a dataclass docstring's first paragraph and its `Attributes:` list.

    An entry `a / b: text` documents both fields.
    """
    doc = inspect.getdoc(cls) or ""
    summary, _, rest = doc.partition("\n\n")
    docs: dict[str, str] = {}
    in_attributes = False
    current: list[str] = []
    for line in rest.splitlines():
        if line.strip() == "Attributes:":
            in_attributes = True
            continue
        if not in_attributes:
            continue
        if line.startswith("    ") and not line.startswith("        "):
            match = _ATTRIBUTE.match(line.strip())
            if match:
                current = [name.strip() for name in match.group("names").split("/")]
                for name in current:
                    docs[name] = match.group("text")
                continue
        if line.startswith("        ") and current:
            for name in current:
                docs[name] += " " + line.strip()
    return " ".join(summary.split()), docs


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _scalar(value: Any) -> str:
    """One YAML value on one line (flow style for lists and mappings)."""
    return yaml.safe_dump(to_plain(value), default_flow_style=True, width=10_000, allow_unicode=True).strip() \
        .removesuffix("\n...").removesuffix("...").strip()


def _render_fields(defaults: Any, values: Mapping[str, Any], indent: str,
                   nested: Mapping[str, tuple[Any, Mapping[str, Any]]] | None = None) -> list[str]:
    """Lines for the fields of dataclass instance `defaults`; those in `values` are set, the rest commented.

    `nested` maps a dict-typed field to (its own defaults dataclass, its set values), rendered as a block.
    """
    _, docs = field_docs(type(defaults))
    lines: list[str] = []
    for item in dataclasses.fields(defaults):
        name = item.name
        lines.extend(_comment(docs.get(name, ""), indent) if docs.get(name) else [])
        default = getattr(defaults, name)
        if nested and name in nested:
            inner_defaults, inner_values = nested[name]
            lines.append(f"{indent}{name}:")  # null when all is commented out: the config reads that as {}
            if inner_defaults is not None:
                summary, _ = field_docs(type(inner_defaults))
                lines.extend(_comment(summary, indent + "  "))
                lines.extend(_render_fields(inner_defaults, inner_values, indent + "  "))
            continue
        if dataclasses.is_dataclass(default):
            set_inner = values.get(name) or {}
            summary, _ = field_docs(type(default))
            lines.append(f"{indent}{name}:" if set_inner else f"{indent}# {name}:")
            lines.extend(_comment(summary, indent + "  "))
            inner = _render_fields(default, set_inner, indent + "  ")
            lines.extend(inner if set_inner else [f"{indent}# {line[len(indent):]}" if not line.lstrip().startswith("#")
                                                  else line for line in inner])
            continue
        if name in values:
            lines.append(f"{indent}{name}: {_scalar(values[name])}")
        else:
            lines.append(f"{indent}# {name}: {_scalar(default)}")
    return lines


def _mask_defaults(method: str) -> tuple[Any, Any]:
    """(the method's options dataclass with defaults, or None if it has required options; its post-processing)."""
    from pipeline.masks.registry import config_type, default_postprocess

    options_cls = config_type(method)
    try:
        options = options_cls()
    except (TypeError, ValueError):
        # e.g. given masks need a location: show the fields with their declared defaults instead.
        options = _declared_defaults(options_cls)
    return options, default_postprocess(method)


def _declared_defaults(cls: type) -> Any:
    """An instance of `cls` holding its declared defaults, bypassing __post_init__ validation."""
    instance = object.__new__(cls)
    for item in dataclasses.fields(cls):
        value = item.default if item.default is not dataclasses.MISSING else (
            item.default_factory() if item.default_factory is not dataclasses.MISSING else None)
        object.__setattr__(instance, item.name, value)
    return instance


def render_example(values: Mapping[str, Any] | None = None) -> str:
    """The commented YAML of a job whose set fields are `values` (nested like a job file).

    Raises ConfigError when `values` is not a valid job (it is validated first, so the example always loads).
    """
    values = {name: dict(section) for name, section in (values or {}).items()}
    config = JobConfig.from_mapping(values) if values else None
    defaults = JobConfig.__new__(JobConfig)  # the defaults, unvalidated (they lack inputs and output)
    for item in dataclasses.fields(JobConfig):
        object.__setattr__(defaults, item.name, item.default_factory())  # type: ignore[misc]
    method = config.masks.method if config else defaults.masks.method
    options_defaults, postprocess_defaults = _mask_defaults(method)

    lines = [f"# {line}".rstrip() for line in HEADER.splitlines()]
    for item in dataclasses.fields(JobConfig):
        section = getattr(defaults, item.name)
        summary, _ = field_docs(type(section))
        lines += ["", *_comment(summary, ""), f"{item.name}:"]
        set_values = values.get(item.name, {})
        nested = None
        if item.name == "masks":
            nested = {
                "options": (options_defaults, set_values.get("options") or {}),
                "postprocess": (postprocess_defaults, set_values.get("postprocess") or {}),
            }
            set_values = {**set_values, "method": method}
        lines += _render_fields(section, set_values, "  ", nested)
    return "\n".join(lines) + "\n"
