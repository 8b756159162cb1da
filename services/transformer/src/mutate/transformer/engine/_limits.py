"""Resource limits of one conversion, with defaults and MUTATE_LIMIT_* overrides."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import EngineError

__all__ = ["Limits"]

_MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one conversion may consume; every field is documented in
    docs/configuration.md together with its environment variable."""

    #: Size of the uploaded file (MUTATE_LIMIT_MAX_INPUT_BYTES).
    max_input_bytes: int = 200 * _MIB
    #: Sum of the workbook parts once decompressed
    #: (MUTATE_LIMIT_MAX_UNCOMPRESSED_BYTES).
    max_uncompressed_bytes: int = 2048 * _MIB
    #: Uncompressed / compressed size of any large zip member
    #: (MUTATE_LIMIT_MAX_COMPRESSION_RATIO).
    max_compression_ratio: float = 200.0
    #: Cells present in the sheets read (MUTATE_LIMIT_MAX_CELLS). A table costs
    #: roughly 130 bytes of memory per cell (2.4 million cells: 320 MB RSS).
    max_cells: int = 10_000_000
    #: Columns of one table (MUTATE_LIMIT_MAX_COLUMNS).
    max_columns: int = 16_384
    #: Wall-clock seconds for one conversion (MUTATE_LIMIT_MAX_RUN_SECONDS).
    max_run_seconds: float = 600.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not getattr(self, field.name) > 0:  # NaN is not positive either
                raise ValueError(f"limit {field.name} must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """Read ``MUTATE_LIMIT_<FIELD>`` variables; unset ones keep the default."""
        values: dict[str, int | float] = {}
        for field in dataclasses.fields(cls):
            name = f"MUTATE_LIMIT_{field.name.upper()}"
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            convert = float if field.type in ("float", float) else int
            try:
                values[field.name] = convert(raw)
            except ValueError:
                raise EngineError(
                    "INVALID_CONFIGURATION", f"{name}={raw!r} is not a number"
                ) from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise EngineError("INVALID_CONFIGURATION", str(exc)) from None
