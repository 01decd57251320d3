"""Matching per-row inputs (given masks, SAM prompts) to images by key.

A key is the image's path relative to the dataset root with '/' separators. Tables written elsewhere
often hold full paths or bare file names instead, so a lookup falls back to the file name when that
name is unique in the table.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Generic, TypeVar

ValueT = TypeVar("ValueT")


def normalise_key(key: str) -> str:
    """'a\\b/./c.jpg' → 'a/b/c.jpg': posix separators, no redundant parts."""
    return PurePosixPath(key.replace("\\", "/")).as_posix()


class KeyIndex(Generic[ValueT]):
    """Values by key, with a unique-file-name fallback. The first value wins for duplicate keys."""

    def __init__(self, items: Iterable[tuple[str, ValueT]]) -> None:
        self._by_key: dict[str, ValueT] = {}
        by_name: dict[str, list[ValueT]] = {}
        for key, value in items:
            normalised = normalise_key(key)
            if normalised in self._by_key:
                continue
            self._by_key[normalised] = value
            by_name.setdefault(PurePosixPath(normalised).name, []).append(value)
        self._by_name = {name: values[0] for name, values in by_name.items() if len(values) == 1}

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> ValueT | None:
        """The value of `key`, else of the unique entry with the same file name, else None."""
        normalised = normalise_key(key)
        if normalised in self._by_key:
            return self._by_key[normalised]
        return self._by_name.get(PurePosixPath(normalised).name)
