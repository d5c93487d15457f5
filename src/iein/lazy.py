"""A name -> class table whose classes are imported on first use.

The registries of models and encoders name every implementation, but importing them all
would pull PyTorch Geometric, pytorch-crf and transformers into every ``iein predict`` on a
GloVe model (seconds of cold start).  Entries are ``"module:Class"`` strings until looked up.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class LazyRegistry(Mapping[str, Any], Generic[T]):
    def __init__(self, entries: dict[str, str]) -> None:
        self._paths = dict(entries)
        self._loaded: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        if name not in self._loaded:
            module, _, attr = self._paths[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def register(self, name: str, cls: T) -> T:
        self._paths[name] = f"{cls.__module__}:{cls.__qualname__}"  # type: ignore[attr-defined]
        self._loaded[name] = cls
        return cls
