"""The one base class of every model and encoder config (like HF ``PretrainedConfig``).

A config is a plain dataclass: it travels in checkpoints and run records as a JSON dict
(:meth:`Config.to_dict` / :meth:`Config.from_dict`) and never as a pickle.  An unknown
field is an error naming the section, so a typo in ``--set`` never passes silently.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    #: what the config configures, for error messages ("model iein", "encoder glove-cnn")
    section: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        unknown = set(d) - cls.field_names()
        if unknown:
            raise ConfigError(f"{cls.section} config: unknown fields {sorted(unknown)} "
                              f"(known: {', '.join(sorted(cls.field_names()))})")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"{cls.section} config: {exc}") from None

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})
