"""JSON encoding and decoding: orjson when it is installed, else the stdlib."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


class JsonDecodeError(ValueError):
    """The bytes are not JSON; the message says where."""


if orjson is not None:  # pragma: no cover - depends on the environment

    def dumps(value: Any) -> bytes:
        encoded: bytes = orjson.dumps(value)
        return encoded

    def loads(data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JsonDecodeError(str(exc)) from exc

else:
    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def dumps(value: Any) -> bytes:
        return _encoder.encode(value).encode()

    def loads(data: bytes) -> Any:
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise JsonDecodeError(str(exc)) from exc
        except RecursionError:
            # `[[[[…` thousands deep: the decoder recurses once per level.
            raise JsonDecodeError("nested too deeply") from None
