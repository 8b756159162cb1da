"""Settings objects built from the environment, one frozen dataclass a service.

Each field names its environment variable with `setting(...)`; `load` reads an
env mapping passed in by `main` (never `os.environ` below it), converts and
validates every value, and fails at start-up with a message naming the
variable. `describe` lists the variables a settings class reads, which the docs
and the Helm chart tests compare against.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

_ENV = "mutate_env"
_HELP = "mutate_help"
_SECRET = "mutate_secret"
_UNIT = "mutate_unit"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """An environment variable is missing or malformed."""


def setting(
    env: str,
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    secret: bool = False,
    unit: str | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """Declare a settings field read from `env`.

    `unit="ms"` reads milliseconds into a float-seconds field, so variables keep
    the names and units operators know while code works in seconds.
    """
    metadata = {_ENV: env, _HELP: help, _SECRET: secret, _UNIT: unit}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class SettingInfo:
    """What one settings field reads, for docs and checks."""

    field: str
    env: str
    default: Any
    help: str
    secret: bool
    # "ms" when the variable is in milliseconds and the field (and `default`)
    # in seconds.
    unit: str | None = None

    @property
    def env_default(self) -> str | None:
        """The default written as the environment variable would be."""
        if self.default is None:
            return None
        if self.unit == "ms":
            return str(round(float(self.default) * 1000))
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        if isinstance(self.default, tuple):
            return ",".join(str(v) for v in self.default)
        return str(self.default)


def describe(cls: type) -> list[SettingInfo]:
    """Every environment variable a settings class reads, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        if _ENV not in f.metadata:
            continue
        default: Any = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out.append(
            SettingInfo(
                field=f.name,
                env=f.metadata[_ENV],
                default=default,
                help=f.metadata[_HELP],
                secret=f.metadata[_SECRET],
                unit=f.metadata[_UNIT],
            )
        )
    return out


def load(cls: type[T], env: Mapping[str, str]) -> T:
    """Build `cls` from `env`; unset variables take the field default."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get(_ENV)
        if name is None or name not in env:
            if f.default is dataclasses.MISSING and (
                f.default_factory is dataclasses.MISSING
            ):
                raise SettingsError(f"{name or f.name} must be set")
            continue
        raw = env[name]
        try:
            value = _convert(raw, hints[f.name])
            if f.metadata.get(_UNIT) == "ms":
                value = float(value) / 1000.0
        except (TypeError, ValueError) as exc:
            shown = "***" if f.metadata.get(_SECRET) else repr(raw)
            raise SettingsError(f"{name}={shown} is not valid: {exc}") from None
        values[f.name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SettingsError(str(exc)) from exc


def redacted(obj: Any) -> dict[str, Any]:
    """The settings as a dict with secrets masked, for a start-up log line."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[f.name] = "***" if f.metadata.get(_SECRET) and value else value
    return out


def _convert(raw: str, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if raw.strip() == "":
            return None
        return _convert(raw, args[0])
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        return tuple(_convert(p, item) for p in parts)
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("expected true or false")
    if hint is int:
        return int(raw.strip())
    if hint is float:
        return float(raw.strip())
    if hint is str:
        return raw
    raise TypeError(f"unsupported settings type {hint!r}")


def check_positive(**values: float) -> None:
    """Raise SettingsError naming the first value that is not positive."""
    for name, value in values.items():
        if value <= 0:
            raise SettingsError(f"{name} must be positive, got {value}")
