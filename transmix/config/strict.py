"""Strict configs: frozen dataclasses that refuse unknown keys and wrong types, and describe themselves.

The training config (:class:`transmix.config.run.TrainConfig`) and the robustness protocol
(:class:`transmix.config.robustness.Protocol`) are both built on :class:`Strict`, so a value is read by the same
rules wherever it is written (a YAML file, a study config, ``--set key=value``) and ``--help`` lists each key's
default and meaning from the field itself. The official release's loader silently ignored a key spelled with
hyphens (its DeiT-S switch probability stayed 0.5); here an unknown key is an error naming the closest known one.

Value rules, one set for every field:

* a number may be written as text, exactly, fractions included: ``1e-4``, ``8/255``, ``lr=1/1000``;
* a float field takes an int; an int field takes whole numbers only (``2.5`` and ``true`` are errors);
* a text field takes a number as text (a folder named ``2024``);
* a tuple field takes a list or one value.

This module imports no torch, so the Snakefile and ``transmix --help`` load configs in milliseconds.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Self, get_args, get_origin, get_type_hints

import yaml

from transmix.errors import BadConfig


class ConfigError(BadConfig, ValueError):
    """A config value or key is wrong; the message names it and the fix."""


def option(default: Any, help: str, group: str = "") -> Any:  # noqa: A002 - argparse's word for it
    """A config field with its ``--help`` text; ``group`` starts a titled group of keys in ``--help``."""
    return dataclasses.field(default=default, metadata={"help": help, "group": group})


class Strict:
    """Base of a frozen dataclass config (subclasses are ``@dataclass(frozen=True)``).

    Values are coerced by the module's rules when the object is made, then :meth:`check` (the subclass's rules
    between fields) runs. ``KIND`` and ``HELP`` name the keys and where they are listed, for error messages.
    """

    KIND: ClassVar[str] = "config key"
    HELP: ClassVar[str] = "--help"

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, field.name, _coerce(field.name, hints[field.name], getattr(self, field.name)))
        self.check()

    def check(self) -> None:
        """Rules between fields; raise :class:`ConfigError` naming the key and the fix."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def unknown(cls, key: str) -> ConfigError:
        """The error for a key no field has, with the closest field (hyphens read as underscores)."""
        close = difflib.get_close_matches(key.replace("-", "_"), cls.keys(), n=1, cutoff=0.6)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        return ConfigError(f"unknown {cls.KIND} `{key}`{hint} (known keys: {cls.HELP})")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Strict: every key must be a field, every value of the field's type."""
        for key in values:
            if key not in cls.keys():
                raise cls.unknown(key)
        return cls(**values)

    @classmethod
    def parse_overrides(cls, pairs: list[str]) -> dict[str, Any]:
        """``["lr=0.001", "grids=[1,7]"]`` -> ``{"lr": 0.001, "grids": [1, 7]}``; values are parsed as YAML."""
        out: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ConfigError(f"override {pair!r} is not key=value (example: --set {cls.keys()[0]}=...)")
            if key not in cls.keys():
                raise cls.unknown(key)
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        return out

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> Self:
        """Defaults <- YAML file (optional) <- ``key=value`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {path} must hold a mapping of key: value")
            values.update(loaded)
        values.update(cls.parse_overrides(overrides or []))
        return cls.from_dict(values)

    @classmethod
    def describe(cls) -> str:
        """Every key with its default and help text, in groups, for ``--help``."""
        lines = []
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if field.metadata.get("group"):
                lines.append(f" {field.metadata['group']}:")
            text = field.metadata.get("help", "")
            lines.append(f"  {field.name} = {show(field.default)}" + (f"  ({text})" if text else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Self:
        return self.from_dict({**self.to_dict(), **changes})


def show(value: Any) -> str:
    """A value as a user would type it: lists in brackets, ``""`` for empty text, ``k/255`` for 8-bit steps."""
    if value == "":
        return '""'
    if isinstance(value, tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, float) and 0 < value < 1 and len(repr(value)) > 6 and round(value * 255) / 255 == value:
        return f"{round(value * 255)}/255"
    return str(value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _coerce(key: str, kind: Any, value: Any) -> Any:
    if get_origin(kind) is tuple:
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_scalar(key, get_args(kind)[0], v) for v in values)
    return _scalar(key, kind, value)


def _scalar(key: str, kind: type, value: Any) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float and number and isinstance(value, int):
        return float(value)
    if kind is str and number:
        return str(value)
    if kind in (int, float) and isinstance(value, str):
        try:  # "8/255", "1/1000", or a number YAML 1.1 read as text ("1e-4")
            exact = Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            pass
        else:
            if kind is float or exact.denominator == 1:
                return kind(exact)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} has type {type(value).__name__}; expected {kind.__name__}")
    return value
