"""The Mutate conversion engine: applies a configuration's rules to a file.

`convert` reads an XLSX/XLSM, CSV or JSON file, runs the rules in order and
writes CSV, JSON or NDJSON; `validate_configuration` checks a configuration
without a file; `preview` shows the first rows before and after the rules.
The behaviour follows shared/CONFIGURATION.md, documented for users in
docs/configuration.md.
"""

from __future__ import annotations

from ._convert import ConversionResult, convert, preview
from ._errors import EngineError
from ._limits import Limits
from ._validation import validate_configuration

__all__ = [
    "ConversionResult",
    "EngineError",
    "Limits",
    "convert",
    "preview",
    "validate_configuration",
]
